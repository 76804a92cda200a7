"""What each deployment target is told to run, decided from the measured numbers of `lathe eval`.

Pure functions over the eval report: which level fits which machine (Apple unified memory,
NVIDIA VRAM with a partial -ngl offload when nothing fits whole, a cloud GPU instance), the
example request and the answer each level gave to it, and the model's chat template turned
into an Ollama (Go) template with its stop tokens. No file I/O here; publish.py feeds it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.chat_template import render_hf
from orchestrator.levels import COMPUTE_ALLOWANCE, GB, MEMORY_TIERS_GB, without_redundant_twins

APPLE_TIERS_GB = MEMORY_TIERS_GB  # unified memory of the usual Macs: 8, 16, 24 (M2-M4 Airs and Pros), 32
NVIDIA_VRAM_GB = (8, 12, 16, 24)  # consumer cards: 3060 Ti/4060, 3060 12G/4070, 4060 Ti 16G, 3090/4090
VRAM_USABLE = 0.9  # of a card's VRAM: the CUDA context and a desktop take the rest
# (instance type, GPU, VRAM GB), smallest first: the cloud recipe takes the first whose GPU holds the level.
CLOUD_GPUS = (("g5.xlarge", "A10G", 24), ("g6e.xlarge", "L40S", 48))
LARGE_KLD = 0.1  # mean KLD above which a level is called out as visibly different from full precision


@dataclass(frozen=True)
class Level:
    """One evaluated level as the recipes need it: what it is, where it lies in the companion, how it measured."""

    name: str  # f16, q4_k_m, mlx-4bit
    runtime: str  # "llama.cpp" or "mlx"
    path: str  # companion-relative: gguf/model-q4_k_m.gguf, or the directory mlx/mlx-4bit
    size_bytes: int
    memory_need_bytes: int  # weights + f16 KV cache at the eval context + compute allowance
    fits_gb: tuple[int, ...]
    mean_kld: float
    task_score: float | None
    flips: int | None
    gen_tps: float
    failures: tuple[str, ...] = ()  # failed gates, one line each

    @property
    def passed(self) -> bool:
        return not self.failures


def _worth(levels: list[Level]) -> list[Level]:
    keep = without_redundant_twins([lv.name for lv in levels])
    return [lv for lv in levels if lv.name in keep]


def best_fit(levels: list[Level], fits: Any) -> Level | None:
    """The level closest to full precision (lowest mean KLD) among those that pass their gates and fit."""
    candidates = _worth([lv for lv in levels if lv.passed and fits(lv)])
    return min(candidates, key=lambda lv: (lv.mean_kld, lv.size_bytes, lv.name), default=None)


@dataclass(frozen=True)
class AppleTier:
    gb: int
    mlx: Level | None
    gguf: Level | None


def apple_tiers(levels: list[Level]) -> list[AppleTier]:
    """Per unified-memory tier, the best MLX and GGUF level that the eval measured as fitting it."""
    mlx = [lv for lv in levels if lv.runtime == "mlx"]
    gguf = [lv for lv in levels if lv.runtime == "llama.cpp"]
    return [AppleTier(gb, best_fit(mlx, lambda lv, gb=gb: gb in lv.fits_gb),
                      best_fit(gguf, lambda lv, gb=gb: gb in lv.fits_gb)) for gb in APPLE_TIERS_GB]


@dataclass(frozen=True)
class GpuTier:
    gb: int
    level: Level | None
    ngl: int  # layers on the GPU; -1: all of them (llama.cpp's "99")
    note: str


def gpu_tier(gb: int, levels: list[Level], layers: int, kv_and_allowance: int) -> GpuTier:
    """The best GGUF level that fits `gb` of VRAM whole; else the smallest one, partly offloaded.

    Offloading N of L layers puts N/L of the weights and of the KV cache on the GPU (llama.cpp
    keeps each offloaded layer's cache beside it), so N = budget / (per-layer weights + KV)."""
    budget = gb * GB * VRAM_USABLE
    gguf = [lv for lv in levels if lv.runtime == "llama.cpp"]
    whole = best_fit(gguf, lambda lv: lv.memory_need_bytes <= budget)
    if whole is not None:
        return GpuTier(gb, whole, -1, "all layers on the GPU")
    passing = sorted(_worth([lv for lv in gguf if lv.passed]), key=lambda lv: (lv.size_bytes, lv.name))
    if not passing or layers <= 0:
        return GpuTier(gb, None, 0, "no level passes its gates")
    smallest = passing[0]
    kv = max(kv_and_allowance - COMPUTE_ALLOWANCE, 0)
    per_layer = (smallest.size_bytes + kv) / layers
    ngl = max(0, min(layers, math.floor((budget - COMPUTE_ALLOWANCE) / per_layer)))
    if ngl == 0:
        return GpuTier(gb, smallest, 0, "does not fit: CPU only")
    return GpuTier(gb, smallest, ngl, f"{ngl} of {layers} layers on the GPU, the rest on the CPU")


def nvidia_tiers(levels: list[Level], layers: int, kv_and_allowance: int) -> list[GpuTier]:
    return [gpu_tier(gb, levels, layers, kv_and_allowance) for gb in NVIDIA_VRAM_GB]


@dataclass(frozen=True)
class CloudPick:
    instance: str
    gpu: str
    vram_gb: int
    tier: GpuTier


def cloud_pick(levels: list[Level], layers: int, kv_and_allowance: int) -> CloudPick:
    """The smallest instance whose GPU holds a passing level whole (else the largest, partly offloaded)."""
    for instance, gpu, gb in CLOUD_GPUS:
        tier = gpu_tier(gb, levels, layers, kv_and_allowance)
        if tier.ngl == -1:
            return CloudPick(instance, gpu, gb, tier)
    instance, gpu, gb = CLOUD_GPUS[-1]
    return CloudPick(instance, gpu, gb, gpu_tier(gb, levels, layers, kv_and_allowance))


def known_limits(levels: list[Level], gate_failures: list[str], drops: Sequence[str] = ()) -> list[str]:
    """What a user should know before picking a level: failed gates, significant drops (`gates.held_back`),
    large KLD, flipped answers, no fit."""
    out = [f"Failed a gate: {line}. Published, but never recommended below." for line in gate_failures]
    out += [f"{line}, more than chance explains (no gate needed). Published, but never recommended below."
            for line in drops]
    for lv in levels:
        if lv.mean_kld > LARGE_KLD:
            out.append(f"{lv.name} ({lv.runtime}): mean KL divergence {lv.mean_kld:.3f} from full precision "
                       f"(above {LARGE_KLD}): its answers visibly differ from the full-precision model's.")
        if lv.flips:
            out.append(f"{lv.name} ({lv.runtime}): {lv.flips} eval item(s) right at full precision are wrong here.")
        if not lv.fits_gb:
            out.append(f"{lv.name} ({lv.runtime}): fits none of the memory tiers measured "
                       f"({', '.join(map(str, APPLE_TIERS_GB))} GB).")
    return out


# --- the example request: a prompt whose answer at every level the eval recorded -----------------

@dataclass(frozen=True)
class Example:
    key: str  # the eval item's id or prompt-N
    prompt: str
    expected: str | None
    max_tokens: int
    answers: dict[str, str]  # level -> the answer `lathe eval` got (greedy, this prompt, this max_tokens)


def pick_example(rounds: list[dict[str, Any]], plain: set[str], levels: list[Level], max_tokens: int) -> Example | None:
    """The arena round that is a plain user message (no system prompt, no passage) answered right
    at the most levels: the recipes' example request shows what the fine-tune learned."""
    names = {lv.name for lv in levels}
    candidates = [r for r in rounds if r["key"] in plain and names <= set(r["answers"])]
    if not candidates:
        return None
    best = max(candidates, key=lambda r: sum(bool(r["correct"].get(n)) for n in names))  # max keeps the first
    return Example(best["key"], best["prompt"], best["expected"], max_tokens,
                   {n: best["answers"][n] for n in sorted(names)})


# The runtime gap for tool calls (bench/tool_calls.py measures it): Ollama serves `tools` only through a
# template that renders .Tools, and the Modelfile's is the chat template's per-role wrapping, without it.
TOOLS_IN_OLLAMA = (
    "Ollama and tools: the Modelfiles' TEMPLATE has no `.Tools`, so Ollama refuses its API's `tools` field for "
    "this model. The tool-call scores above were measured with the tools in the system message "
    "(`You may call one or more functions...` with one JSON tool per line inside `<tools></tools>`), which the "
    "Modelfile renders exactly as llama.cpp's chat template does: send them that way and read the calls from "
    "the reply's `<tool_call>` blocks.")


# --- chat template -> Ollama ----------------------------------------------------------------------

SENTINELS = {"system": "LATHESYSTEMTEXT", "user1": "LATHEUSERONE", "assistant": "LATHEASSISTANTONE",
             "user2": "LATHEUSERTWO"}


class TemplateUnsupported(Exception):
    """The chat template is not a plain per-role wrapping; the Modelfile then leaves TEMPLATE out."""


@dataclass(frozen=True)
class ChatSpec:
    """A chat template reduced to what Ollama's Go template needs: per-role text around the content."""

    prefix: dict[str, str]
    suffix: dict[str, str]
    generation: str  # opens the assistant's turn
    preamble: str = ""  # what the template emits when there is no system message (a default system prompt)
    stops: list[str] = field(default_factory=list)

    @property
    def system(self) -> bool:
        return "system" in self.prefix


def _between(text: str, marks: list[str]) -> list[str]:
    """The text before, between and after the marks, which must appear in this order."""
    parts, rest = [], text
    for mark in marks:
        head, found, rest = rest.partition(mark)
        if not found:
            raise TemplateUnsupported(f"message text {mark!r} not rendered verbatim")
        parts.append(head)
    return [*parts, rest]


def _strip_prefix(text: str, prefix: str, what: str) -> str:
    if not text.startswith(prefix):
        raise TemplateUnsupported(what)
    return text[len(prefix):]


def derive_chat_spec(template: str, bos: str, eos: str, special_tokens: set[str], eos_tokens: list[str],
                     runtime_adds_bos: bool = True) -> ChatSpec:
    """Read the per-role wrapping off renders of sentinel conversations, then check it reproduces them.
    A leading BOS is left to the runtime only where the runtime adds one (the GGUF's add_bos_token):
    SmolLM2's BOS is `<|im_start|>`, which its template writes and llama.cpp does not add."""
    from jinja2.exceptions import TemplateError

    s = SENTINELS
    sysm = {"role": "system", "content": s["system"]}
    u1, a1, u2 = ({"role": "user", "content": s["user1"]}, {"role": "assistant", "content": s["assistant"]},
                  {"role": "user", "content": s["user2"]})

    def render(msgs: list[dict[str, str]], gen: bool) -> str:
        try:
            text = render_hf(template, msgs, gen, bos, eos)
        except TemplateError as exc:
            raise TemplateUnsupported(str(exc)) from None
        return text[len(bos):] if runtime_adds_bos and bos and text.startswith(bos) else text

    plain = render([u1, a1, u2], False)
    head, between_ua, between_au, suffix_u = _between(plain, [s["user1"], s["assistant"], s["user2"]])
    generation = _strip_prefix(render([u1, a1, u2], True), plain, "the generation prompt is not appended at the end")
    suffix_a = _between(render([u1, a1], False), [s["user1"], s["assistant"]])[-1]
    prefix_a = _strip_prefix(between_ua, suffix_u, "user turns end differently mid-conversation")
    prefix_u = _strip_prefix(between_au, suffix_a, "assistant turns end differently mid-conversation")
    if not head.endswith(prefix_u):
        raise TemplateUnsupported("the first user turn is wrapped differently from the others")
    prefix, suffix = {"user": prefix_u, "assistant": prefix_a}, {"user": suffix_u, "assistant": suffix_a}
    preamble = head[: len(head) - len(prefix_u)]
    try:  # a system role, if the template has one of its own (Gemma's folds it into the first user turn)
        sys_head, sys_between, *_ = _between(render([sysm, u1, a1, u2], False), [s["system"], s["user1"]])
        if sys_between.endswith(prefix_u) and sys_between != prefix_u:
            prefix["system"], suffix["system"] = sys_head, sys_between[: len(sys_between) - len(prefix_u)]
    except TemplateUnsupported:
        pass
    turn_end = suffix_a.strip()
    stops = list(dict.fromkeys([t for t in [*eos_tokens, eos, turn_end] if t and t in special_tokens]))
    spec = ChatSpec(prefix, suffix, generation, preamble, stops)
    for msgs in ([u1], [u1, a1, u2], [sysm, u1] if spec.system else [u1, a1]):
        want = render(msgs, True)
        if render_spec(spec, msgs) != want:
            raise TemplateUnsupported("the derived per-role wrapping does not reproduce the template")
    return spec


def render_spec(spec: ChatSpec, messages: list[dict[str, str]]) -> str:
    """What the Ollama template built from `spec` renders (Ollama's .System is the system messages)."""
    has_system = any(m["role"] == "system" for m in messages)
    out = "" if has_system and spec.system else spec.preamble
    for m in messages:
        if m["role"] in spec.prefix:
            out += spec.prefix[m["role"]] + m["content"] + spec.suffix[m["role"]]
    return out + spec.generation


def _go_literal(text: str) -> str:
    if '"""' in text:
        raise TemplateUnsupported('the template contains """ which a Modelfile cannot quote')
    return text.replace("{{", '{{ "{{" }}')


def ollama_template(spec: ChatSpec) -> str:
    """The Go template for the Modelfile's TEMPLATE; no trim markers, so every newline is kept."""
    out = ""
    if spec.preamble:
        # A default system prompt is emitted only when the conversation brings none (as the Jinja does).
        out += "{{ if not .System }}" + _go_literal(spec.preamble) + "{{ end }}" if spec.system \
            else _go_literal(spec.preamble)
    out += "{{ range .Messages }}"
    branches = [r for r in ("system", "user", "assistant") if r in spec.prefix]
    for n, role in enumerate(branches):
        out += ("{{ if " if n == 0 else "{{ else if ") + f'eq .Role "{role}" }}}}'
        out += _go_literal(spec.prefix[role]) + "{{ .Content }}" + _go_literal(spec.suffix[role])
    out += "{{ end }}{{ end }}" + _go_literal(spec.generation)
    return out
