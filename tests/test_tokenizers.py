"""Tokenizers llama.cpp's converter does not know by hash: Qwen2's and Llama 3's split rules on vocabularies
trained here and saved through transformers, exported to GGUF, proved token for token, and evaluated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from orchestrator.cluster import calibration, gguf
from orchestrator.cluster.export import ExportPlan, export
from orchestrator.errors import LatheError
from orchestrator.tinymodel import resolve_base_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
LIGHT = "num_layers=2&intermediate_size=512&pretrain_steps=30"


def _base(arch: str, style: str) -> Path:
    padding = "&vocab_padding=128" if arch == "qwen2" else ""  # padded as Qwen3's is (one build for the module)
    return Path(resolve_base_model(f"tiny://{arch}?{LIGHT}&tokenizer={style}{padding}"))


def test_a_qwen2_model_with_its_own_tokenizer_exports_and_evaluates(tmp_path: Path) -> None:
    """Qwen2's class rebuilds Qwen2's split pattern and NFC in code (transformers 5); the converter refuses the
    vocabulary by hash, Lathe matches it to llama.cpp's `qwen2` by its rules, proves the ids, calibrates the
    k-quants on the training conversations, and `lathe eval`'s code measures the levels against the reference.
    Its vocabulary is padded as Qwen3's is (128 embedding rows beyond the tokenizer's tokens): the reference
    used to fingerprint len(tokenizer), llama.cpp and MLX the model's rows, and every level was refused."""
    from transformers import AutoConfig, AutoTokenizer

    from orchestrator.evaluation.evaluate import evaluate

    base = _base("qwen2", "qwen2")
    tokenizer = AutoTokenizer.from_pretrained(base)
    assert type(tokenizer).__name__ == "Qwen2Tokenizer"
    assert AutoConfig.from_pretrained(base).vocab_size == len(tokenizer) + 128
    run = tmp_path / "run"
    shutil.copytree(REPO / "recipes" / "data", run / "data")
    items = (REPO / "recipes" / "data" / "wrong_facts_eval.jsonl").read_text().splitlines()[:5]
    (run / "data" / "five.jsonl").write_text("\n".join(items) + "\n")
    recipe = {"base_model": str(base), "datasets": [{"path": "data/wrong_facts.jsonl", "type": "chat_template"}],
              "lathe": {"eval": {"dataset": "data/five.jsonl", "context_length": 128}}}
    (run / "recipe.yml").write_text(yaml.safe_dump(recipe))
    steps: list[str] = []
    plan = ExportPlan(run_id="qwen2-own-tokenizer", recipe_sha256="0" * 64, base_model=str(base), weights_dir=base,
                      out_dir=run / "export", gguf_levels=["f16", "q4_k_m", "q4_k_m-static"], mlx_bits=[4],
                      context=128, calibration_samples=calibration.samples(recipe["datasets"], run, None))
    manifest = export(plan, step=steps.append)
    assert any("used 'qwen2' (matched by its split rules)" in s for s in steps), steps
    assert any(s.startswith("llama.cpp tokenizes like HF") for s in steps), steps
    assert manifest.calibration and manifest.calibration["samples"] == 50

    evaluation = evaluate(run, backend="all")
    by = {r.level: r for r in evaluation.results}
    assert set(by) == {"f16", "q4_k_m", "q4_k_m-static", "mlx-4bit"}
    assert by["f16"].quality["mean_kld"] < 1e-3 and by["f16"].quality["top1_agreement"] > 0.99
    assert by["q4_k_m"].quality["mean_kld"] > by["f16"].quality["mean_kld"]
    assert all(len(r.answers) == 5 for r in evaluation.results)
    assert json.loads((run / "eval" / "report.json").read_text())["calibration_effect"][0]["level"] == "q4_k_m"


def test_a_llama_with_llama3_split_rules_converts_token_for_token(tmp_path: Path) -> None:
    """Llama 3's rules include `ignore_merges` (a piece already in the vocabulary is one token): llama.cpp's
    `llama-bpe` does the same, and the probe (digits in threes, contractions, emoji, code) proves it."""
    base = _base("llama", "llama3")
    out = tmp_path / "model.gguf"
    assert gguf.convert(base, out, "f16") == "llama-bpe"
    assert gguf.check_tokenizer(out, base) > 100


def test_an_unknown_split_pattern_is_refused_in_one_line(tmp_path: Path) -> None:
    """A pattern llama.cpp implements under no name: no GGUF rather than one that tokenizes differently."""
    model = tmp_path / "odd"
    shutil.copytree(_base("llama", "llama3"), model)
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    split = tokenizer["pre_tokenizer"]["pretokenizers"][0]
    split["pattern"]["Regex"] = split["pattern"]["Regex"].replace(r"\p{N}{1,3}", r"\p{N}{1,2}")
    (model / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(LatheError, match=r"/odd: llama.cpp has no pre-tokenizer for this tokenizer \(split pattern "
                                         r".+\\p\{N\}\{1,2\}.+ is none of gpt-2, llama-bpe, qwen2\); a GGUF would "
                                         r"tokenize differently from the model, so none is written$"):
        gguf.convert(model, tmp_path / "odd.gguf", "f16")
    assert not (tmp_path / "odd.gguf").exists()


def test_a_gguf_that_tokenizes_differently_is_refused(tmp_path: Path) -> None:
    """The proof itself: the GGUF of one vocabulary checked against another model's tokenizer (Qwen2's rules
    on a vocabulary of its own) differs early, and check_tokenizer says where."""
    out = tmp_path / "model.gguf"
    gguf.convert(_base("llama", "llama3"), out, "f16")
    with pytest.raises(LatheError, match=r"^model.gguf: llama.cpp tokenizes differently from HF from token \d+ "
                                         r"\(near '.*'\); refusing"):
        gguf.check_tokenizer(out, _base("qwen2", "qwen2"))
