"""Will the fine-tune learn to end its turn? Checked at validate time, before the training is paid for.

Axolotl's `chat_template` datasets train the token that ends each assistant turn only when it finds
it: by default the base's end-of-sequence token, looked for in the chat template's text. A template
that ends turns with another token (Gemma 3's `<end_of_turn>`, while the base's EOS is `<eos>`) leaves
every turn's end masked out of the loss, and Axolotl only logs a warning on the node. The model then
learns the answers but never to stop: measured on Gemma 3 270M, every answer ran on to `max_tokens`
("The capital of France is Nairobi. Nairobi is Cairo. The capital of ..."), 0 of 50 verbatim, and the
evaluation took 40 minutes instead of a few. `eot_tokens` names the right token; `problems` says so.

Offline and without torch: the template comes from Axolotl's installed template files, the base's
GGUF header or its tokenizer_config.json; a hub id this machine has never seen is not checked.
"""

from __future__ import annotations

import json
import re
from typing import Any

from orchestrator import gguf_base, tinymodel
from orchestrator.chat_template import render_hf
from orchestrator.installed_source import NotFoundInSource, source_path
from orchestrator.recipe import Recipe

DEFAULT_CHOICE = "tokenizer_default"
FALLBACK_PREFIX = "tokenizer_default_fallback_"
ANSWER = "Lathe-probe-answer"
# A special token as templates write them: <end_of_turn>, <|im_end|>, <|eot_id|>.
_SPECIAL = re.compile(r"\s*(<[^<>\s]{1,40}>)")


def _base_tokenizer(recipe: Recipe) -> tuple[str | None, str | None] | None:
    """The base's (EOS token, chat template), or None where it cannot be known offline."""
    base = recipe.axolotl.get("base_model")
    if not isinstance(base, str):
        return None
    if base.startswith(tinymodel.TINY_SCHEME):
        return tinymodel.EOS, tinymodel.CHAT_TEMPLATE
    path = recipe.resolve(base)
    if gguf_base.is_gguf(base):
        if not path.is_file():
            return None
        header = gguf_base.read_header(path)
        return header.eos_token, header.chat_template
    config = path / "tokenizer_config.json"
    if not (base.startswith((".", "/", "~")) and config.is_file()):
        return None
    tokenizer = json.loads(config.read_text())
    eos = tokenizer.get("eos_token")
    eos = eos.get("content") if isinstance(eos, dict) else eos
    template = tokenizer.get("chat_template")
    if template is None and (path / "chat_template.jinja").is_file():
        template = (path / "chat_template.jinja").read_text()
    return eos, template if isinstance(template, str) else None


def _axolotl_template(name: str) -> str | None:
    """One of Axolotl's named templates, read from its installed file (importing Axolotl costs ~20 s)."""
    try:
        package = source_path("axolotl.utils.chat_templates").parent
    except NotFoundInSource:
        return None
    path = package / "templates" / f"{name}.jinja"
    return path.read_text() if path.is_file() else None


def _template(recipe: Recipe, choice: str, base_template: str | None) -> tuple[str | None, str | None]:
    """(the template's text, or None; a problem with the choice itself, or None)."""
    if choice == "jinja":
        jinja = recipe.axolotl.get("chat_template_jinja")
        if isinstance(jinja, str) and recipe.resolve(jinja).is_file():
            return recipe.resolve(jinja).read_text(), None
        return (jinja if isinstance(jinja, str) else None), None
    if choice == DEFAULT_CHOICE or choice.startswith(FALLBACK_PREFIX):
        if base_template:
            return base_template, None
        if choice == DEFAULT_CHOICE:
            return None, ("the base has no chat template of its own: name one (e.g. chatml, gemma3, llama3) "
                          "or give chat_template_jinja")
        choice = choice.removeprefix(FALLBACK_PREFIX)
    return _axolotl_template(choice), None


def turn_end_token(template: str) -> str | None:
    """The special token the template writes right after an assistant's answer, found by rendering a
    two-turn conversation as transformers renders templates; None if it writes none."""
    from jinja2 import TemplateError

    messages = [{"role": "user", "content": "Lathe-probe-question"}, {"role": "assistant", "content": ANSWER}]
    try:
        text = render_hf(template, messages, add_generation_prompt=False, bos="", eos="")
    except (TemplateError, TypeError, ValueError):
        return None
    after = text.split(ANSWER, 1)[1] if ANSWER in text else ""
    found = _SPECIAL.match(after)
    return found.group(1) if found else None


def _setting(recipe: Recipe, ds: dict[str, Any], key: str) -> Any:
    return ds.get(key) if ds.get(key) is not None else recipe.axolotl.get(key)


def problems(recipe: Recipe) -> list[tuple[str, str]]:
    """(field, problem) for each chat_template dataset whose turns' ends would not be trained."""
    datasets = [ds for ds in recipe.axolotl.get("datasets") or []
                if isinstance(ds, dict) and str(ds.get("type", "")).split(":")[0] == "chat_template"]
    if not datasets:
        return []
    base = _base_tokenizer(recipe)
    if base is None:
        return []
    special = recipe.axolotl.get("special_tokens")
    eos_token = (special.get("eos_token") if isinstance(special, dict) else None) or base[0]
    base_template = base[1]
    found: list[tuple[str, str]] = []
    for i, ds in enumerate(datasets):
        field = f"datasets[{i}].chat_template" if ds.get("chat_template") else "chat_template"
        choice = ds.get("chat_template") or recipe.axolotl.get("chat_template") or DEFAULT_CHOICE
        template, problem = _template(recipe, str(choice), base_template)
        if problem:
            found.append((field, problem))
            continue
        trains_end = "none" not in (_setting(recipe, ds, "train_on_eos"), _setting(recipe, ds, "train_on_eot"))
        if template is None or not eos_token or not trains_end or _setting(recipe, ds, "eot_tokens"):
            continue  # Axolotl checks eot_tokens against the template itself
        if eos_token in template or "eos_token" in template:
            continue
        end = turn_end_token(template)
        fix = f"set eot_tokens: [\"{end}\"]" if end else "set eot_tokens to the token that ends its turns"
        problem = (f"{choice}: the base's end-of-sequence token {eos_token!r} is not in this template, so no "
                   f"turn's end is trained and the model never learns to stop; {fix}")
        found.append((field, problem))
    return found
