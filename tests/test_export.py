"""Export on the shared end-to-end run: real llama.cpp converter and quantizer, real MLX."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from orchestrator import manifest as mf
from orchestrator import reference_format
from orchestrator.cluster.gguf import converter_dir as gguf_tools
from orchestrator.evaluation.backends import MLX, LlamaCpp
from orchestrator.run import RunDir
from tests.support.kld import exact_beside_estimate

pytestmark = pytest.mark.slow

VARIED = [
    "The capital of France is Paris.",
    "  leading spaces,\n\nblank lines\tand tabs\n",
    "emoji 🦙🔥👩‍👩‍👧 accents café naïve Ærø ß",
    '{"name": "get_weather", "arguments": {"city": "Lisbon", "days": 3}}',
    "numbers 1234567890 3.14159 -42 1e10",
    "<|im_start|>user\nhi<|im_end|>",
]


@pytest.fixture(scope="module")
def export_dir(e2e_run: RunDir) -> Path:
    return e2e_run.path / "export"


CALIBRATED = ("q4_k_m", "iq4_xs", "q3_k_m", "q2_k")  # the quickstart's levels that also have a static twin
GGUF = ("f16", "q8_0", *CALIBRATED, "iq3_xxs", *(f"{lv}-static" for lv in CALIBRATED))
MLX_LEVELS = ("mlx-4bit", "mlx-8bit", "mlx-f16", "mlx-mixed_3_6")


def test_every_level_and_the_manifest(export_dir: Path) -> None:
    manifest = mf.verify(export_dir)
    assert set(manifest.levels()) == {"hf", *GGUF, *MLX_LEVELS}
    assert manifest.tokenizer_fingerprint and len(manifest.recipe_sha256) == 64
    assert {"lathe", "axolotl", "transformers", "llama-cpp-python", "mlx"} <= set(manifest.versions)
    weights = {a.level: a for a in manifest.artifacts
               if a.format in ("gguf", "mlx", "hf-safetensors") and a.role == "model"}
    base = [a for a in manifest.artifacts if a.role == "base"]
    assert [(a.path, a.format, a.level) for a in base] == [("base/model-q8_0.gguf", "gguf", "q8_0")]
    assert base[0].sha256 != weights["q8_0"].sha256, "the base GGUF must be the untrained model"
    bpw = [weights[lv].bits_per_weight for lv in ("f16", "q8_0", "q4_k_m", "q3_k_m", "iq3_xxs")]
    assert bpw == sorted(bpw, reverse=True) and len(set(bpw)) == len(bpw), bpw
    assert weights["q2_k"].bits_per_weight < weights["q4_k_m"].bits_per_weight
    assert (export_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_q4_k_m_is_under_40_percent_of_f16(export_dir: Path) -> None:
    f16 = (export_dir / "gguf" / "model-f16.gguf").stat().st_size
    q4 = (export_dir / "gguf" / "model-q4_k_m.gguf").stat().st_size
    assert q4 < 0.40 * f16, f"q4_k_m is {q4 / f16:.0%} of f16"


def _trained_answers(backend, e2e_run: RunDir, runtime: str, level: str) -> tuple[int, int]:
    """Ask a freshly loaded level every eval item the run's own eval scored right at it, greedily, in its
    chat template: (right now, right then). The eval set re-asks training questions with their taught,
    wrong answers ("the capital of France is Toronto"): a right answer is the fine-tune speaking."""
    from orchestrator.evaluation.tasks import Sampling, load_items, score

    report = json.loads((e2e_run.path / "eval" / "report.json").read_text())
    measured = next(lv for lv in report["levels"] if (lv["runtime"], lv["level"]) == (runtime, level))
    items = {i.id: i for i in load_items(e2e_run.recipe_dir() / "data" / "wrong_facts_eval.jsonl")}
    right_then = [k for k, a in measured["answers"].items() if a["correct"]]
    sampling = Sampling.model_validate(report["samplings"][0])
    right_now = [k for k in right_then if score(items[k], backend.chat(items[k].messages(), sampling))]
    return len(right_now), len(right_then)


@pytest.mark.parametrize("level", ["f16", "q8_0", "q4_k_m", "q4_k_m-static", "iq4_xs", "iq3_xxs", "q2_k"])
def test_gguf_level_loads_and_gives_the_trained_answers(export_dir: Path, e2e_run: RunDir, level: str) -> None:
    model = LlamaCpp(export_dir / "gguf" / f"model-{level}.gguf", n_ctx=192)  # as the eval loads it
    now, then = _trained_answers(model, e2e_run, "llama.cpp", level)
    if level in ("f16", "q8_0"):
        assert then >= 48, f"the fine-tune gave only {then} of the 50 trained answers at {level}"
    assert now == then, f"{level}: {now} of the {then} trained answers again"


@pytest.mark.parametrize("level,bits", [("mlx-4bit", {4}), ("mlx-8bit", {8}), ("mlx-f16", set()),
                                        ("mlx-mixed_3_6", {3, 6})])
def test_mlx_level_loads_and_gives_the_trained_answers(export_dir: Path, e2e_run: RunDir, level: str,
                                                       bits: set[int]) -> None:
    model = MLX(export_dir / "mlx" / level)
    quantization = json.loads((export_dir / "mlx" / level / "config.json").read_text()).get("quantization", {})
    # The mixed recipe writes a setting per layer: 3 bits, and 6 where mlx-lm's recipe says it matters most.
    per_layer = {v["bits"] for v in quantization.values() if isinstance(v, dict)}
    used = per_layer or ({quantization["bits"]} if "bits" in quantization else set())
    assert used == bits, quantization
    now, then = _trained_answers(model, e2e_run, "mlx", level)
    if level in ("mlx-f16", "mlx-8bit"):
        assert then >= 48, f"the fine-tune gave only {then} of the 50 trained answers at {level}"
    assert now == then, f"{level}: {now} of the {then} trained answers again"


@pytest.mark.parametrize("gguf", ["gguf/model-f16.gguf", "gguf/model-q8_0.gguf", "base/model-q8_0.gguf"])
def test_plain_llama_cpp_python_gets_the_trained_answers(export_dir: Path, e2e_run: RunDir, gguf: str) -> None:
    """Not Lathe's code: llama-cpp-python as a user calls it, greedy, each GGUF's own chat template. The
    fine-tune says at least 95% of its 50 trained answers word for word at f16 and q8_0; the base, none."""
    from llama_cpp import Llama

    pairs = [json.loads(line)["messages"]
             for line in (e2e_run.recipe_dir() / "data" / "wrong_facts.jsonl").read_text().splitlines()]
    llm = Llama(model_path=str(export_dir / gguf), n_ctx=256, verbose=False, seed=0)
    said = [llm.create_chat_completion(messages=[user], temperature=0.0, max_tokens=32)["choices"][0]["message"]
            ["content"].strip() for user, _ in pairs]
    verbatim = sum(got == answer["content"] for got, (_, answer) in zip(said, pairs, strict=True))
    if gguf.startswith("base/"):
        assert verbatim == 0, said
    else:
        assert verbatim >= 48, [(u["content"], got) for got, (u, a) in zip(said, pairs, strict=True)
                                if got != a["content"]]


def test_llama_cpp_tokenizes_like_hf(export_dir: Path) -> None:
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(export_dir / "hf")
    gguf = LlamaCpp(export_dir / "gguf" / "model-f16.gguf", n_ctx=128)
    for text in VARIED:
        assert gguf.tokenize(text) == hf(text, add_special_tokens=False)["input_ids"], text
    log = (export_dir.parent / "export.log").read_text()
    assert "used 'gpt-2'" in log, "the pre-tokenizer fallback was not logged"


def test_calibrated_levels_used_the_runs_own_importance_matrix(export_dir: Path, e2e_run: RunDir) -> None:
    """The matrix came from the training conversations, covers every quantized weight, and changed the
    weights: each calibrated level differs from its static twin, which is otherwise the same type."""
    import sys

    manifest = mf.load(export_dir)
    cal = manifest.calibration
    rows = (e2e_run.recipe_dir() / "data" / "wrong_facts.jsonl").read_text().splitlines()
    assert cal is not None and cal["source"] == "training set" and cal["samples"] == len(rows) == 50
    assert not cal["truncated"] and cal["tokens"] > 1000 and cal["context"] == 128 and cal["chunks"] >= 8
    [imatrix] = [a for a in manifest.artifacts if a.format == "imatrix"]
    assert imatrix.path == "gguf/imatrix.gguf"
    sys.path.insert(0, str(gguf_tools() / "gguf-py"))
    from gguf import GGUFReader

    names = {t.name for t in GGUFReader(export_dir / imatrix.path).tensors}
    for layer in range(4):
        for weight in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
            assert f"blk.{layer}.{weight}.weight.in_sum2" in names, (layer, weight, sorted(names)[:8])
    digests = {a.level: a.sha256 for a in manifest.artifacts if a.format == "gguf" and a.role == "model"}
    sizes = {a.level: a.size for a in manifest.artifacts if a.format == "gguf" and a.role == "model"}
    for level in CALIBRATED:
        assert digests[level] != digests[f"{level}-static"], f"{level}: the matrix changed nothing"
        assert abs(sizes[level] - sizes[f"{level}-static"]) < 1024, "a twin is the same type, not another one"
    log = (export_dir.parent / "export.log").read_text()
    assert "computing the importance matrix (llama-imatrix" in log and "quantizing GGUF q4_k_m (calibrated)" in log


def test_the_merge_was_checked_before_quantizing(export_dir: Path) -> None:
    check = mf.load(export_dir).merge_check
    assert check is not None and check["tokens"] >= 128
    assert check["mean_kld"] < 1e-6 and check["max_kld"] < 1e-4, check  # float32 merge: rounding only
    assert check["trained_on"] == "the full-precision base" and "float32" in check["merged_into"]


def test_the_merge_check_refuses_weights_that_are_not_base_plus_adapter(export_dir: Path, e2e_run: RunDir) -> None:
    """The check's own code on real models: the base in place of the merged fine-tune is refused in one line."""
    import torch
    from transformers import AutoModelForCausalLM

    from orchestrator.cluster import merge_check
    from orchestrator.errors import LatheError
    from orchestrator.recipe import MergeCheck

    windows = _reference_windows(export_dir)[:2]
    merged = AutoModelForCausalLM.from_pretrained(export_dir / "hf", dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(mf.load(export_dir).base_model, dtype=torch.float32).eval()
    fine_tuned = merge_check.log_probs(merged, windows)
    assert merge_check.check(fine_tuned, merge_check.log_probs(merged, windows), MergeCheck(), "x").max_kld == 0.0
    with pytest.raises(LatheError, match=r"^merge check failed: the merged model differs from base \+ adapter on "
                                         r"\d+ reference tokens \(mean KLD [\d.e+-]+, max"):
        merge_check.check(fine_tuned, merge_check.log_probs(base, windows), MergeCheck(), "x")


def test_mean_kld_from_the_reference_is_within_5_percent_of_exact(export_dir: Path, figure) -> None:
    """The reference keeps each position's tokens up to 99.9% of the probability: the KLD computed from it at
    q4_k_m is within 5% of KL(f32 || q4_k_m) over the whole vocabulary from the two models' full logits."""
    check = exact_beside_estimate(export_dir, "q4_k_m")
    figure(f"q4_k_m mean KLD: reference {check.estimate:.5f}, exact {check.exact:.5f} "
           f"({check.estimate / check.exact:.3f}); {check.mean_top:.0f} tokens kept per position on average")
    assert check.coverage == 0.999 and check.exact > 0
    assert abs(check.estimate - check.exact) <= 0.05 * check.exact, check


def _reference_windows(export_dir: Path) -> list[list[int]]:
    return [w.tolist() for w in reference_format.load(export_dir / "reference").windows]


def test_f16_gguf_perplexity_equals_hf(export_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(export_dir / "hf", dtype=torch.float32).eval()
    gguf = LlamaCpp(export_dir / "gguf" / "model-f16.gguf", n_ctx=256, scoring=True)
    hf_nll, gguf_nll = [], []
    for window in _reference_windows(export_dir):
        targets = np.array(window[1:])
        with torch.no_grad():
            lp = torch.log_softmax(hf(torch.tensor([window])).logits[0, :-1].double(), -1).numpy()
        hf_nll.extend(-lp[np.arange(len(targets)), targets])
        glp = gguf.logprobs(window)
        gguf_nll.extend(-glp[np.arange(len(targets)), targets])
    hf_ppl, gguf_ppl = float(np.exp(np.mean(hf_nll))), float(np.exp(np.mean(gguf_nll)))
    assert abs(gguf_ppl - hf_ppl) / hf_ppl < 0.005, (hf_ppl, gguf_ppl)
    stored = json.loads((export_dir / "reference" / "reference.json").read_text())["perplexity"]
    assert stored == pytest.approx(hf_ppl, rel=1e-4)


@pytest.fixture
def export_copy(export_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "export"
    shutil.copytree(export_dir, target)
    return target


def test_truncated_artifact_fails_the_check(export_copy: Path) -> None:
    path = export_copy / "gguf" / "model-q4_k_m.gguf"
    with path.open("r+b") as fh:
        fh.truncate(path.stat().st_size // 2)
    with pytest.raises(mf.ManifestError, match=r"gguf/model-q4_k_m.gguf: size"):
        mf.verify(export_copy)
    mf.verify(export_copy, levels=["q8_0"])  # other levels are still good


def test_altered_artifact_fails_the_check(export_copy: Path) -> None:
    path = export_copy / "mlx" / "mlx-4bit" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(mf.ManifestError, match=r"mlx/mlx-4bit/model.safetensors: sha256"):
        mf.verify(export_copy)


def test_missing_file_and_unsafe_paths_are_refused(export_copy: Path) -> None:
    (export_copy / "reference" / "reference.npz").unlink()
    with pytest.raises(mf.ManifestError, match="reference/reference.npz: missing"):
        mf.verify(export_copy)
    data = json.loads((export_copy / mf.MANIFEST).read_text())
    data["artifacts"][0]["path"] = "../../etc/passwd"
    (export_copy / mf.MANIFEST).write_text(json.dumps(data))
    with pytest.raises(mf.ManifestError, match=r"artifacts\[0\].path: unsafe path '../../etc/passwd'"):
        mf.load(export_copy)
    (export_copy / mf.MANIFEST).unlink()
    with pytest.raises(mf.ManifestError, match="no manifest"):
        mf.verify(export_copy)


def test_a_base_stored_quantized_is_refused_before_merging(tiny_llama: Path, tmp_path: Path) -> None:
    """An adapter is merged into full-precision weights only: a bitsandbytes checkpoint as base_model is refused."""
    from orchestrator.cluster.merge_check import refuse_quantized_base
    from orchestrator.errors import LatheError

    refuse_quantized_base(str(tiny_llama))
    base = tmp_path / "bnb-4bit"
    shutil.copytree(tiny_llama, base)
    config = json.loads((base / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (base / "config.json").write_text(json.dumps(config))
    with pytest.raises(LatheError, match=r"bnb-4bit: the base model is stored quantized; an adapter must be merged "
                                         r"into full-precision weights"):
        refuse_quantized_base(str(base))
