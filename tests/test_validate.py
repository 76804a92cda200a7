"""`lathe validate`: every shipped recipe passes; each kind of bad recipe gets its one line."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.errors import LatheError
from orchestrator.validate import validate

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_shipped_recipes_validate(recipe: Path) -> None:
    parsed = validate(recipe)
    assert parsed.axolotl["datasets"], "every shipped recipe trains on something"


def _quickstart() -> dict[str, Any]:
    return yaml.safe_load((REPO / "recipes" / "quickstart.yml").read_text())


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def mutate(cfg: dict) -> None:
        node = cfg
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        node[keys[-1]] = value

    return mutate


def _drop(key: str) -> Callable[[dict], None]:
    return lambda cfg: cfg.pop(key)


def _rename(old: str, new: str) -> Callable[[dict], None]:
    return lambda cfg: cfg.__setitem__(new, cfg.pop(old))


def _dataset_file(name: str, text: str | bytes, **ds: Any) -> Callable[[dict], None]:
    def mutate(cfg: dict) -> None:
        cfg["_files"] = {f"data/{name}": text}
        cfg["datasets"][0] = {"path": f"data/{name}", **ds}

    return mutate


CHAT = {"type": "chat_template", "field_messages": "messages"}

# (id, mutation, the exact line expected)
CATALOGUE: list[tuple[str, Callable[[dict], None], str]] = [
    ("misspelled-key", _rename("learning_rate", "lerning_rate"),
     "bad.yml: lerning_rate: unknown key; did you mean 'learning_rate'?"),
    ("misspelled-dataset-key", lambda c: _rename("field_messages", "feild_messages")(c["datasets"][0]),
     "bad.yml: datasets[0].feild_messages: unknown key; did you mean 'field_messages'?"),
    ("missing-dataset-file", _set("datasets.0.path", "x.jsonl"),
     "bad.yml: datasets[0].path: no such file 'x.jsonl'"),
    ("bad-json-line", _dataset_file("broken.jsonl", '{"messages": [{"role": "user", "content": "hi"}]}\n{"messages": [\n', **CHAT),
     "bad.yml: datasets[0].path: broken.jsonl: line 2: invalid JSON (Expecting value)"),
    ("wrong-field", _dataset_file("fields.jsonl", '{"conversation": []}\n', **CHAT),
     "bad.yml: datasets[0].path: fields.jsonl: line 1: field 'messages' must be a non-empty list of messages"),
    ("alpaca-missing-output", _dataset_file("alpaca.jsonl", '{"instruction": "2+2?", "input": ""}\n', type="alpaca"),
     "bad.yml: datasets[0].path: alpaca.jsonl: line 1: missing field 'output'"),
    ("empty-dataset", _dataset_file("empty.jsonl", "\n", **CHAT),
     "bad.yml: datasets[0].path: empty.jsonl: has no rows"),
    ("oversized-row", _dataset_file("huge.jsonl", '{"messages": [{"role": "user", "content": "%s"}]}\n' % ("x" * (4 << 20)),
                                    **CHAT),
     "bad.yml: datasets[0].path: huge.jsonl: line 1: row is 4194352 bytes, over the 4194304 byte limit"),
    ("json-not-a-list", _dataset_file("rows.json", '{"messages": []}', **CHAT),
     "bad.yml: datasets[0].path: rows.json: a .json dataset must hold a list of rows"),
    ("not-utf8", _dataset_file("latin1.jsonl", b'{"messages": "caf\xe9"}\n', **CHAT),
     "bad.yml: datasets[0].path: latin1.jsonl: line 1: invalid JSON (not UTF-8: byte 0xe9 at offset 17)"),
    ("no-datasets", _drop("datasets"),
     "bad.yml: datasets: missing: at least one dataset is needed"),
    ("no-base-model", _drop("base_model"),
     "bad.yml: base_model: missing: a hub id, a local path or tiny://llama"),
    ("unknown-tiny-arch", _set("base_model", "tiny://gpt5"),
     "bad.yml: base_model: unknown tiny architecture 'gpt5'; choose one of llama, qwen2"),
    ("lathe-misspelled", _set("lathe.resources.gpu_per_node", 1),
     "bad.yml: lathe.resources.gpu_per_node: unknown key; did you mean 'gpus_per_node'?"),
    ("lathe-bad-value", _set("lathe.resources.nodes", 0),
     "bad.yml: lathe.resources.nodes: Input should be greater than or equal to 1"),
    ("lathe-unknown-level", _set("lathe.export.gguf", ["q4_k_z"]),
     "bad.yml: lathe.export.gguf[0]: Input should be 'f32', 'f16', 'bf16', 'q8_0', 'q6_k', 'q5_k_m', 'q5_k_s', 'q4_k_m', 'q4_k_s', 'q3_k_m' or 'q2_k'"),
    ("gate-for-unexported-level", _set("lathe.eval.gates", {"q2_k": {"max_flips": 1}}),
     "bad.yml: lathe: gate for level 'q2_k' which is not exported (exported: f16, mlx-4bit, mlx-8bit, mlx-f16, q4_k_m, q5_k_m, q6_k, q8_0)"),
    ("cpu-triton-kernel", _drop("lora_mlp_kernel"),
     "bad.yml: lora_mlp_kernel: must be false for CPU training (Axolotl's Triton LoRA kernels need CUDA)"),
    ("cpu-fp16", _set("fp16", True),
     "bad.yml: fp16: fp16 mixed precision needs a GPU; use bf16 or fp32 on CPU (this recipe trains on CPU: lathe.resources.gpus_per_node is 0)"),
    ("missing-deepspeed-config", lambda c: (_set("lathe.resources.gpus_per_node", 2)(c), _set("deepspeed", "deepspeed/zero9.json")(c)),
     "bad.yml: deepspeed: no such file 'deepspeed/zero9.json'"),
    ("missing-eval-set", _set("lathe.eval.dataset", "data/nope.jsonl"),
     "bad.yml: lathe.eval.dataset: no such file 'data/nope.jsonl'"),
    ("axolotl-type-error", _set("learning_rate", "fast"),
     "bad.yml: learning_rate: could not convert string to float: 'fast'"),
    ("axolotl-dataset-type-error", _set("datasets.0.type", 5),
     "bad.yml: datasets[0].type: Input should be a valid string"),
]


def _write(tmp_path: Path, cfg: dict) -> Path:
    shutil.copytree(REPO / "recipes" / "data", tmp_path / "data")
    shutil.copytree(REPO / "recipes" / "deepspeed", tmp_path / "deepspeed")
    for rel, text in cfg.pop("_files", {}).items():
        (tmp_path / rel).write_bytes(text if isinstance(text, bytes) else text.encode())
    path = tmp_path / "bad.yml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.mark.parametrize("mutate,expected", [c[1:] for c in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_bad_recipe_gets_one_line(tmp_path: Path, mutate: Callable[[dict], None], expected: str) -> None:
    cfg = _quickstart()
    mutate(cfg)
    path = _write(tmp_path, cfg)
    with pytest.raises(LatheError) as err:
        validate(path)
    assert str(err.value) == expected
    assert err.value.exit_code == 2


def test_catalogue_is_wide_enough() -> None:
    assert len({c[0] for c in CATALOGUE}) >= 12


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yml"
    path.write_text("base_model: tiny://llama\ndatasets:\n  - path: [unclosed\n")
    with pytest.raises(LatheError) as err:
        validate(path)
    assert str(err.value).startswith("broken.yml: line 4: invalid YAML")


def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(LatheError, match=r"^list.yml: a recipe must be a YAML mapping"):
        validate(path)


def test_several_problems_one_line_each(tmp_path: Path) -> None:
    cfg = _quickstart()
    cfg["datasets"][0]["path"] = "x.jsonl"
    cfg.pop("lora_qkv_kernel")
    with pytest.raises(LatheError) as err:
        validate(_write(tmp_path, cfg))
    assert str(err.value).splitlines() == [
        "bad.yml: datasets[0].path: no such file 'x.jsonl'",
        "bad.yml: lora_qkv_kernel: must be false for CPU training (Axolotl's Triton LoRA kernels need CUDA)",
    ]


def test_gpu_recipe_may_keep_kernels(tmp_path: Path) -> None:
    """The CPU-safety checks apply only when no GPU will be used."""
    cfg = _quickstart()
    cfg["lathe"]["resources"]["gpus_per_node"] = None
    cfg.pop("lora_mlp_kernel")
    path = _write(tmp_path, cfg)
    assert validate(path, gpus_per_node=1).axolotl["adapter"] == "lora"
    with pytest.raises(LatheError, match="lora_mlp_kernel"):
        validate(path, gpus_per_node=0)


def test_relative_paths_follow_the_recipe_not_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert validate(REPO / "recipes" / "quickstart.yml", axolotl_schema=False).name == "quickstart.yml"
