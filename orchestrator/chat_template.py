"""Rendering a Hugging Face chat template as transformers does, for the laptop and the nodes alike.

Used where Lathe reads a template instead of tokenizing through it: `turn_end` (which token ends a turn,
at validate time and in the export) and `publish.deploy_targets` (the Modelfile's template, checked
against the original). No torch, no transformers: jinja2's sandbox with transformers' settings.
"""

from __future__ import annotations


def render_hf(template: str, messages: list[dict[str, str]], add_generation_prompt: bool, bos: str, eos: str) -> str:
    """Render like transformers' apply_chat_template: a sandbox with trim_blocks/lstrip_blocks."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: "26 Jul 2024")
    return env.from_string(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                            bos_token=bos, eos_token=eos, tools=None)
