"""MLX gets the model's rotary base. transformers 5 writes it nested (`rope_parameters`), mlx-lm reads it
at the top level: SmolLM2's 100,000 became mlx-lm's default 10,000, and its MLX f16 differed from the
full-precision model by 0.068 nats of mean KLD before any quantization (now 0.0000 on the same text)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from orchestrator.cluster.export import to_mlx
from orchestrator.evaluation.backends import MLX

TEXT = "The capital of France is Paris. Rivers run to the sea, and the sea gives back the rain. " * 3


def test_an_mlx_export_scores_like_the_model_it_came_from_whatever_its_rotary_base(light_llama: Path,
                                                                                     tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = tmp_path / "hf"
    shutil.copytree(light_llama, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    assert "rope_theta" not in config and "rope_parameters" in config, "written as transformers 5 writes it"
    config["rope_parameters"]["rope_theta"] = 100000.0  # SmolLM2's
    (model_dir / "config.json").write_text(json.dumps(config))

    to_mlx(model_dir, tmp_path / "mlx-f16", 16)
    ids = AutoTokenizer.from_pretrained(model_dir)(TEXT, add_special_tokens=False)["input_ids"]
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        p = torch.log_softmax(hf(torch.tensor([ids])).logits[0, :-1].double(), -1).numpy()
    q = MLX(tmp_path / "mlx-f16").logprobs(ids)
    kld = float((np.exp(p) * (p - q)).sum(axis=1).mean())
    assert kld < 1e-3, f"MLX f16 against the float32 model it was converted from: mean KLD {kld:.4f}"


def test_mlx_completes_plain_text_greedily_and_ends_at_the_stop(light_llama: Path, tmp_path: Path) -> None:
    """`complete` (true facts asked of a pretrained base as text): mlx-lm's own greedy continuation, cut at
    the first stop string. Prompts that share their start (the same shots before each question) prefill
    only what differs, and answer exactly as a fresh model asked each prompt alone."""
    from mlx_lm import generate

    to_mlx(light_llama, tmp_path / "mlx-f16", 16)
    # The export writes the merges as strings (export.compact_merges): the same tokens as the model's own.
    merges = json.loads((tmp_path / "mlx-f16" / "tokenizer.json").read_text())["model"]["merges"]
    assert merges and all(isinstance(m, str) for m in merges)
    from transformers import AutoTokenizer

    probe = "The capital of France is Paris.\n  def f(x):\treturn x ** 2  # ünïcödé, 12345"
    backend = MLX(tmp_path / "mlx-f16")
    assert backend.tokenize(probe) == AutoTokenizer.from_pretrained(light_llama).encode(probe, add_special_tokens=False)
    whole = generate(backend.model, backend.tokenizer, prompt="The capital of France is", max_tokens=24, verbose=False)
    stop = whole.strip()[6:9]
    assert len(stop) == 3 and stop in whole, whole
    assert backend.complete("The capital of France is", 24, [stop]) == whole[: whole.find(stop)]
    assert backend.complete("The capital of France is", 24, ["no such text"]) == whole

    shots = "Rivers run to the sea, and the sea gives back the rain. The market opens in the morning. " * 2
    prompts = [shots + end for end in ("The capital of France is", "The sea is", "Rivers run to", "The sea is")]
    reused = MLX(tmp_path / "mlx-f16")
    answers = [reused.complete(p, 12, ["\n"]) for p in prompts]
    alone = [generate(backend.model, backend.tokenizer, prompt=p, max_tokens=12, verbose=False).split("\n")[0]
             for p in prompts]
    assert answers == alone
    lengths = [len(backend.tokenizer.encode(p)) for p in prompts]
    assert reused.prefilled < sum(lengths) - 2 * len(backend.tokenizer.encode(shots)), (reused.prefilled, lengths)
