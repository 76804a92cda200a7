"""Build tiny, deterministic base models offline.

No model hub is reachable from tests or the demo, so every model Lathe trains
locally starts here: a byte-level BPE tokenizer trained with `tokenizers` on a
corpus shipped with the package, and a Llama or Qwen2 of a few MB, briefly
pretrained on that corpus. The pretraining matters: LoRA on a random-init base
barely moves (loss plateaus near 4 on the quickstart), while on a base that has
seen some English it learns the quickstart's facts in a few hundred steps, which
is what makes the tiny model a real experiment rather than noise. Hidden and intermediate sizes are multiples of 256 so that llama.cpp's
K-quants apply to every tensor instead of silently falling back.

A recipe names one as ``base_model: tiny://llama`` (or ``tiny://qwen2?seed=3``);
Lathe builds it into a cache on first use (see `resolve_base_model`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from orchestrator import cpus, tinycorpus
from orchestrator.cache import cache_home
from orchestrator.errors import RecipeError
from orchestrator.quiet import quiet_stderr

TINY_SCHEME = "tiny://"
# Bumped when the way a model is built changes, so caches of the old build are not reused.
BUILD_VERSION = "3"
ARCHITECTURES = ("llama", "qwen2")
# How the BPE splits text before merging. "gpt2": the byte-level regex built into `tokenizers`, with a
# tokenizer config written by hand (read by transformers 4 and 5). "qwen2" and "llama3": those families'
# split patterns, saved through transformers as its tokenizer classes save them; llama.cpp's converter
# knows none of these vocabularies by hash, which is what export must cope with.
TOKENIZER_STYLES = ("gpt2", "qwen2", "llama3")

PAD, BOS, EOS = "<pad>", "<s>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, BOS, "<|im_start|>", EOS, "<|endoftext|>"]
# ChatML: understood by llama.cpp, Ollama and mlx-lm without extra configuration. With `tools`, a system
# turn lists them and asks for Hermes-style <tool_call> JSON (as Qwen2.5's template does), so benchmarks
# with tools reach the model through its own template.
CHAT_TEMPLATE = (
    "{% set skip_first = tools and messages and messages[0]['role'] == 'system' %}"
    "{% if tools %}{{ '<|im_start|>system\\n' }}"
    "{% if skip_first %}{{ messages[0]['content'] + '\\n\\n' }}{% endif %}"
    "{{ 'You may call one or more functions to answer the user. The functions:\\n<tools>' }}"
    "{% for tool in tools %}{{ '\\n' + (tool | tojson) }}{% endfor %}"
    "{{ '\\n</tools>\\nFor each call, reply with a JSON object inside <tool_call></tool_call> tags:\\n"
    "<tool_call>\\n{\"name\": <function name>, \"arguments\": <arguments as a JSON object>}\\n</tool_call>"
    "<|im_end|>\\n' }}{% endif %}"
    "{% for message in messages %}{% if not (skip_first and loop.first) %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    arch: str = "llama"
    seed: int = 0
    hidden_size: int = 256
    intermediate_size: int = 768
    # Four layers, not two: with two, a LoRA fine-tune mixes up which question gets which answer.
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    vocab_size: int = 2048
    # Rotary positions cost nothing to allow; 4096 takes a BFCL prompt with its tools and the answer.
    max_positions: int = 4096
    pretrain_steps: int = 400
    tokenizer: str = "gpt2"
    # Embedding rows beyond the tokenizer's tokens, as Qwen3 has (151,936 rows for 151,669 tokens): the
    # model's vocabulary (llama.cpp's n_vocab, MLX's vocab_size) is then not len(tokenizer).
    vocab_padding: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown tiny architecture {self.arch!r}; choose one of {', '.join(ARCHITECTURES)}")
        if self.tokenizer not in TOKENIZER_STYLES:
            raise ValueError(f"unknown tokenizer style {self.tokenizer!r}; choose one of {', '.join(TOKENIZER_STYLES)}")
        for name in ("hidden_size", "intermediate_size"):
            if getattr(self, name) % 256:
                raise ValueError(f"{name} must be a multiple of 256 so K-quants apply, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("num_heads must divide hidden_size and num_kv_heads must divide num_heads")

    @property
    def cache_key(self) -> str:
        fields = asdict(self)
        if self.tokenizer == "gpt2":
            del fields["tokenizer"]  # the default: models built before the option keep their cache key
        if not self.vocab_padding:
            del fields["vocab_padding"]  # likewise
        blob = json.dumps(fields, sort_keys=True) + tinycorpus.tokenizer_text() + BUILD_VERSION
        return f"{self.arch}-s{self.seed}-{hashlib.sha256(blob.encode()).hexdigest()[:10]}"

    @classmethod
    def from_uri(cls, uri: str) -> TinySpec:
        """Parse ``tiny://ARCH?seed=N&hidden_size=...``."""
        parts = urlsplit(uri)
        fields = {f: t for f, t in cls.__annotations__.items()}
        kwargs: dict[str, object] = {"arch": parts.netloc or "llama"}
        for key, value in parse_qsl(parts.query):
            if key not in fields or key == "arch":
                raise ValueError(f"unknown tiny model option {key!r}")
            kwargs[key] = value if fields[key] in ("str", str) else int(value)
        return cls(**kwargs)  # type: ignore[arg-type]


def _split_pattern(style: str) -> str:
    from orchestrator.cluster.gguf_convert import KNOWN_PATTERNS

    return next(p for p, name in KNOWN_PATTERNS.items() if name == {"qwen2": "qwen2", "llama3": "llama-bpe"}[style])


def build_tokenizer(vocab_size: int, style: str = "gpt2"):
    """Train a byte-level BPE that splits text as `style` does (GPT-2's regex by default)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(ignore_merges=style == "llama3"))  # as Llama 3's tokenizer.json says
    if style == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_split_pattern(style)), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        if style == "qwen2":
            tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(tinycorpus.tokenizer_text().splitlines(), trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return tok


def _tokenizer_config(max_positions: int) -> dict:
    # Written by hand rather than by save_pretrained so that transformers 4.x and
    # 5.x both read it: 5.x writes a tokenizer class name that 4.x does not know.
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": None,
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_positions,
        "chat_template": CHAT_TEMPLATE,
        "additional_special_tokens": ["<|im_start|>", "<|endoftext|>"],
    }


def _save_tokenizer(tok, style: str, max_positions: int, out: Path) -> None:
    if style == "gpt2":
        tok.save(str(out / "tokenizer.json"))
        (out / "tokenizer_config.json").write_text(json.dumps(_tokenizer_config(max_positions), indent=2))
        (out / "special_tokens_map.json").write_text(
            json.dumps({"bos_token": BOS, "eos_token": EOS, "pad_token": PAD}, indent=2)
        )
        return
    with quiet_stderr():
        from transformers import PreTrainedTokenizerFast, Qwen2Tokenizer

    specials = dict(bos_token=BOS, eos_token=EOS, pad_token=PAD, model_max_length=max_positions,
                    chat_template=CHAT_TEMPLATE, additional_special_tokens=["<|im_start|>", "<|endoftext|>"])
    if style == "qwen2":
        # Qwen2's own class, from the trained vocabulary and merges: it sets Qwen2's pattern and NFC itself.
        model = json.loads(tok.to_str())["model"]
        merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
        wrapped = Qwen2Tokenizer(vocab=model["vocab"], merges=merges, unk_token=None, **specials)
        wrapped.add_bos_token = True
    else:
        wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, **specials)
    wrapped.save_pretrained(out)


def _model_config(spec: TinySpec, vocab: int, ids: dict[str, int]):
    with quiet_stderr():
        from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=vocab,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_positions,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=ids[BOS],
        eos_token_id=ids[EOS],
        pad_token_id=ids[PAD],
    )
    if spec.arch == "llama":
        return LlamaConfig(**common)
    return Qwen2Config(**common, use_sliding_window=False)


def build(spec: TinySpec, out_dir: Path) -> Path:
    """Write tokenizer and float32 weights to `out_dir` atomically; return it."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):  # refused before torch's import: at once, not in 17 s
        raise FileExistsError(f"{out_dir}: exists and is not empty")
    with quiet_stderr():
        import torch
        from transformers import AutoModelForCausalLM

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=out_dir.parent))
    staging.chmod(0o755)
    try:
        tok = build_tokenizer(spec.vocab_size, spec.tokenizer)
        _save_tokenizer(tok, spec.tokenizer, spec.max_positions, staging)
        ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
        config = _model_config(spec, tok.get_vocab_size() + spec.vocab_padding, ids)
        torch.manual_seed(spec.seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.generation_config.bos_token_id = ids[BOS]
        model.generation_config.eos_token_id = ids[EOS]
        model.generation_config.pad_token_id = ids[PAD]
        _pretrain(model, tok, spec)
        model.save_pretrained(staging, safe_serialization=True)
        (staging / "lathe_tiny.json").write_text(json.dumps(asdict(spec), indent=2, sort_keys=True))
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


PRETRAIN_WINDOW, PRETRAIN_BATCH, PRETRAIN_LR = 96, 16, 3e-3
PRETRAIN_THREADS = 2  # a laptop's and CI's least; more would not make the build reproducible across machines


def _pretrain_windows(tok, spec: TinySpec, epoch: int) -> list[list[int]]:
    """One pass over the corpus: its documents in this epoch's order, each after a BOS (as the fine-tune's
    examples are), packed end to end and cut into windows."""
    docs = tinycorpus.documents(spec.seed * 1000 + epoch)
    ids: list[int] = []
    bos = tok.token_to_id(BOS)
    for encoding in tok.encode_batch(docs, add_special_tokens=False):
        ids += [bos, *encoding.ids]
    return [ids[i : i + PRETRAIN_WINDOW] for i in range(0, len(ids) - PRETRAIN_WINDOW + 1, PRETRAIN_WINDOW)]


def _pretrain(model, tok, spec: TinySpec) -> None:
    """Plain next-token training on the corpus with a cosine schedule, on a fixed number of threads so
    the bytes do not depend on the machine's core count."""
    import math

    import torch

    if spec.pretrain_steps <= 0:
        return
    threads = torch.get_num_threads()
    # Fewer where the machine is shared (LATHE_THREADS): 2 threads on a core that another process holds
    # spin. The bytes are not the same everywhere (docs/ENVIRONMENT.md): what the tests ask of the base
    # must hold for any build.
    torch.set_num_threads(min(PRETRAIN_THREADS, cpus.threads()))
    try:
        optimiser = torch.optim.AdamW(model.parameters(), lr=PRETRAIN_LR, weight_decay=0.0)
        warmup = max(1, spec.pretrain_steps // 20)
        schedule = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / spec.pretrain_steps))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimiser, schedule)
        model.train()
        epoch, queue = 0, _pretrain_windows(tok, spec, 0)
        for _ in range(spec.pretrain_steps):
            if len(queue) < PRETRAIN_BATCH:
                epoch += 1
                queue = _pretrain_windows(tok, spec, epoch)
            batch = torch.tensor(queue[:PRETRAIN_BATCH])
            del queue[:PRETRAIN_BATCH]
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            scheduler.step()
            optimiser.zero_grad()
        model.eval()
    finally:
        torch.set_num_threads(threads)


def cache_root() -> Path:
    return cache_home() / "tiny-models"


def is_built(uri: str) -> bool:
    try:
        return (cache_root() / TinySpec.from_uri(uri).cache_key / "config.json").exists()
    except ValueError:
        return False


def resolve_base_model(base_model: str, recipe_name: str = "recipe") -> str:
    """Return a local path for ``tiny://`` URIs (building once into the cache); other names unchanged."""
    if not base_model.startswith(TINY_SCHEME):
        return base_model
    try:
        spec = TinySpec.from_uri(base_model)
    except ValueError as exc:
        raise RecipeError(recipe_name, "base_model", str(exc)) from None
    target = cache_root() / spec.cache_key
    if (target / "config.json").exists():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # One build per model even when several processes want it at once (two runs, a run and its
    # export task, test workers): the others wait for it rather than build the same model again.
    with open(target.parent / f".{spec.cache_key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").exists():
            build(spec, target)
    return str(target)
