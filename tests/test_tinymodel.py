"""Tiny offline base models: loadable, generating, deterministic, K-quant friendly."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator import tinymodel

TEXTS = [
    "The capital of France is Paris.",
    "  two leading spaces\n\nand blank lines\ttabs",
    "emoji 🦙🔥 and accents: café, naïve, Ærø",
    '{"name": "get_weather", "arguments": {"city": "Lisbon"}}',
]


# The default Llama takes minutes to build on one core: `make test-fast` leaves it to the full suite, where
# the end-to-end run builds it anyway.
@pytest.mark.parametrize("arch", [pytest.param("llama", marks=pytest.mark.slow), "qwen2"])
def test_loads_and_generates(arch: str, request: pytest.FixtureRequest) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path: Path = request.getfixturevalue(f"tiny_{arch}")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == arch
    assert model.config.hidden_size % 256 == 0 and model.config.intermediate_size % 256 == 0
    assert sum(f.stat().st_size for f in path.iterdir()) < 20e6, "a few MB, not a real model"

    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tok(prompt, return_tensors="pt")
    assert ids["input_ids"][0, 0].item() == tok.bos_token_id
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_tokenizer_round_trips_any_text(light_llama: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(light_llama)
    for text in TEXTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<pad>" and tok.bos_token == "<s>"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path, light_llama: Path) -> None:
    # The build procedure is the default's, shortened: three full builds would cost minutes.
    short = {"arch": "llama", "pretrain_steps": 10, "num_layers": 2, "intermediate_size": 512}
    first = tinymodel.build(tinymodel.TinySpec(seed=0, **short), tmp_path / "first")
    again = tinymodel.build(tinymodel.TinySpec(seed=0, **short), tmp_path / "again")
    other = tinymodel.build(tinymodel.TinySpec(seed=1, **short), tmp_path / "other")

    def digest(p: Path) -> str:
        return hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest()

    assert digest(again) == digest(first)
    assert (again / "tokenizer.json").read_bytes() == (light_llama / "tokenizer.json").read_bytes()
    assert digest(other) != digest(first)


def test_spec_rejects_sizes_that_break_k_quants() -> None:
    with pytest.raises(ValueError, match="multiple of 256"):
        tinymodel.TinySpec(hidden_size=320)
    with pytest.raises(ValueError, match="unknown tiny model option"):
        tinymodel.TinySpec.from_uri("tiny://llama?colour=blue")
    assert tinymodel.TinySpec.from_uri("tiny://qwen2?seed=3&num_layers=4") == tinymodel.TinySpec(
        arch="qwen2", seed=3, num_layers=4
    )
    spec = tinymodel.TinySpec.from_uri("tiny://qwen2?tokenizer=qwen2&seed=3")
    assert spec.tokenizer == "qwen2" and spec.cache_key != tinymodel.TinySpec(arch="qwen2", seed=3).cache_key
    with pytest.raises(ValueError, match="unknown tokenizer style 'bert'; choose one of gpt2, qwen2, llama3"):
        tinymodel.TinySpec.from_uri("tiny://llama?tokenizer=bert")


def test_build_refuses_to_overwrite(tmp_path: Path) -> None:
    target = tmp_path / "m"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        tinymodel.build(tinymodel.TinySpec(), target)
    assert (target / "keep.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["m"], "no staging directory left behind"


UV = Path(sys.executable).with_name("uv")  # bootstrap installs uv into the venv


@pytest.mark.needs("venv-uv", why="a transformers 4.x environment")
def test_tokenizer_loads_in_transformers_4(tmp_path: Path, light_llama: Path) -> None:
    """Users on older stacks (transformers 4.x) load the same tokenizer and get the same ids."""
    from transformers import AutoTokenizer

    env = tmp_path / "tf4"
    subprocess.run([str(UV), "venv", "-q", "--python", sys.executable, str(env)], check=True)
    subprocess.run(
        [str(UV), "pip", "install", "-q", "--python", str(env / "bin" / "python"), "transformers>=4.50,<5", "jinja2"],
        check=True,
    )
    script = (
        "import json,sys; from transformers import AutoTokenizer; import transformers;"
        "t=AutoTokenizer.from_pretrained(sys.argv[1]); texts=json.loads(sys.argv[2]);"
        "c=t.apply_chat_template([{'role':'user','content':'hi'}],tokenize=False,add_generation_prompt=True);"
        "print(json.dumps({'v':transformers.__version__,'ids':[t(x)['input_ids'] for x in texts],'chat':c,"
        "'eos':t.eos_token,'pad':t.pad_token}))"
    )
    out = subprocess.run(
        [str(env / "bin" / "python"), "-c", script, str(light_llama), json.dumps(TEXTS)],
        check=True, capture_output=True, text=True,
    )
    old = json.loads(out.stdout.strip().splitlines()[-1])
    assert old["v"].startswith("4.")
    new = AutoTokenizer.from_pretrained(light_llama)
    assert old["ids"] == [new(x)["input_ids"] for x in TEXTS]
    assert old["chat"] == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert (old["eos"], old["pad"]) == ("<|im_end|>", "<pad>")
