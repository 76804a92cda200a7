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
     ("bad.yml: lathe.export.gguf[0]: Input should be 'f32', 'f16', 'bf16', 'q8_0', 'q6_k', 'q5_k_m', 'q5_k_s', 'q4_k_m', "
     "'q4_k_s', 'iq4_nl', 'iq4_xs', 'q3_k_l', 'q3_k_m', 'iq3_m', 'q3_k_s', 'iq3_s', 'iq3_xxs', 'q2_k', 'iq2_m', 'iq2_s', "
     "'iq2_xs' or 'iq2_xxs'")),
    ("base-source-without-a-gguf-base", _set("lathe.export.base_gguf", "source"),
     "bad.yml: lathe.export.base_gguf: 'source' is a GGUF base's own file, and base_model is not a .gguf file"),
    ("base-gguf-unknown", _set("lathe.export.base_gguf", "q4_1"),
     ("bad.yml: lathe.export.base_gguf: Input should be 'f32', 'f16', 'bf16', 'q8_0', 'q6_k', 'q5_k_m', 'q5_k_s', "
      "'q4_k_m', 'q4_k_s', 'iq4_nl', 'iq4_xs', 'q3_k_l', 'q3_k_m', 'iq3_m', 'q3_k_s', 'iq3_s', 'iq3_xxs', 'q2_k', "
      "'iq2_m', 'iq2_s', 'iq2_xs', 'iq2_xxs' or 'source'")),
    ("gate-for-unexported-level", _set("lathe.eval.gates", {"q6_k": {"max_flips": 1}}),
     ("bad.yml: lathe: gate for level 'q6_k' which is not exported (exported: f16, iq3_xxs, iq4_xs, iq4_xs-static, mlx-4bit, "
     "mlx-8bit, mlx-f16, mlx-mixed_3_6, q2_k, q2_k-static, q3_k_m, q3_k_m-static, q4_k_m, q4_k_m-static, q8_0)")),
    ("unknown-mlx-export", _set("lathe.export.mlx", [4, "5bit-g48"]),
     ("bad.yml: lathe.export.mlx: unknown MLX export '5bit-g48': use bits (2, 3, 4, 5, 6, 8, 16), bits with a "
     "group size (e.g. 4bit-g32) or a mixed recipe (mixed_2_6, mixed_3_4, mixed_3_6, mixed_4_6)")),
    ("i-quant-without-imatrix", lambda c: (_set("lathe.export.imatrix.enabled", False)(c),
                                           _set("lathe.export.gguf", ["f16", "iq2_xs"])(c)),
     "bad.yml: lathe.export: iq2_xs cannot be made without an importance matrix (imatrix.enabled is false)"),
    ("missing-calibration-file", _set("lathe.export.imatrix.dataset", "data/calibration.txt"),
     "bad.yml: lathe.export.imatrix.dataset: no such file 'data/calibration.txt'"),
    ("cpu-fp16", _set("fp16", True),
     "bad.yml: fp16: fp16 mixed precision needs a GPU; use bf16 or fp32 on CPU (this recipe trains on CPU: lathe.resources.gpus_per_node is 0)"),
    ("missing-deepspeed-config", lambda c: (_set("lathe.resources.gpus_per_node", 2)(c), _set("deepspeed", "deepspeed/zero9.json")(c)),
     "bad.yml: deepspeed: no such file 'deepspeed/zero9.json'"),
    ("missing-eval-set", _set("lathe.eval.dataset", "data/nope.jsonl"),
     "bad.yml: lathe.eval.dataset: no such file 'data/nope.jsonl'"),
    ("axolotl-type-error", _set("sample_packing", "sometimes"),
     "bad.yml: sample_packing: Input should be a valid boolean, unable to interpret input"),
    # Values Axolotl's schema lets through but that cannot train (orchestrator/trainability.py).
    ("learning-rate-not-a-number", _set("learning_rate", "fast"), "bad.yml: learning_rate: 'fast' is not a number"),
    ("learning-rate-zero", _set("learning_rate", 0),
     "bad.yml: learning_rate: 0 must be more than 0 and less than 1 (a rate of 1 or more diverges at once)"),
    ("learning-rate-huge", _set("learning_rate", 5),
     "bad.yml: learning_rate: 5 must be more than 0 and less than 1 (a rate of 1 or more diverges at once)"),
    ("no-epochs", _set("num_epochs", 0), "bad.yml: num_epochs: 0 must be more than 0 (a fraction trains on part of the data)"),
    ("no-steps", _set("max_steps", 0), "bad.yml: max_steps: 0 must be at least 1, or -1 (not set: the epochs decide)"),
    ("steps-below-unset", _set("max_steps", -2), "bad.yml: max_steps: -2 must be at least 1, or -1 (not set: the epochs decide)"),
    ("logging-steps-neither", _set("logging_steps", 1.5),
     "bad.yml: logging_steps: 1.5 must be a whole number of steps, or a fraction of the run between 0 and 1"),
    ("save-steps-zero", _set("save_steps", 0),
     "bad.yml: save_steps: 0 must be a whole number of steps, or a fraction of the run between 0 and 1"),
    ("batch-zero", _set("micro_batch_size", 0), "bad.yml: micro_batch_size: 0 must be at least 1"),
    ("batch-fraction", _set("micro_batch_size", 1.5), "bad.yml: micro_batch_size: 1.5 must be a whole number, at least 1"),
    ("accumulation-zero", _set("gradient_accumulation_steps", 0),
     "bad.yml: gradient_accumulation_steps: 0 must be at least 1"),
    ("sequence-zero", _set("sequence_len", 0), "bad.yml: sequence_len: 0 must be at least 1"),
    ("sequence-past-the-model", _set("sequence_len", 8192),
     "bad.yml: sequence_len: 8192 is longer than the base model's 4096 positions"),
    ("lora-rank-zero", _set("lora_r", 0), "bad.yml: lora_r: 0 must be at least 1"),
    ("lora-dropout-one", _set("lora_dropout", 1.0), "bad.yml: lora_dropout: 1.0 must be at least 0 and less than 1"),
    ("warmup-ratio-over-one", _set("warmup_ratio", 2), "bad.yml: warmup_ratio: 2 must be at least 0 and less than 1"),
    ("val-set-size-neither", _set("val_set_size", 2.5),
     "bad.yml: val_set_size: 2.5 must be a fraction of the data (0 to 1) or a whole number of rows"),
    ("weight-decay-negative", _set("weight_decay", -0.1), "bad.yml: weight_decay: -0.1 must be at least 0"),
    ("keep-no-checkpoint", _set("save_total_limit", 0), "bad.yml: save_total_limit: 0 must be at least 1 when set"),
    ("optimizer-misspelled", _set("optimizer", "adamw_torh"),
     "bad.yml: optimizer: unknown optimizer 'adamw_torh'; did you mean 'adamw_torch'?"),
    ("scheduler-misspelled", _set("lr_scheduler", "cosin"),
     "bad.yml: lr_scheduler: unknown scheduler 'cosin'; did you mean 'cosine'?"),
    ("dataset-type-misspelled", _set("datasets.0.type", "chat_templat"),
     "bad.yml: datasets[0].type: unknown dataset type 'chat_templat'; did you mean 'chat_template'?"),
    ("evals-without-an-eval-set", _set("evals_per_epoch", 2),
     "bad.yml: evals_per_epoch: needs an eval set: set val_set_size above 0, or test_datasets"),
    ("best-model-without-an-eval-set", _set("load_best_model_at_end", True),
     "bad.yml: load_best_model_at_end: needs an eval set: set val_set_size above 0, or test_datasets"),
    ("lora-without-targets", _set("lora_target_linear", False),
     ("bad.yml: adapter: lora with no target modules trains nothing: set lora_target_linear: true or "
      "lora_target_modules")),
    ("axolotl-dataset-type-error", _set("datasets.0.type", 5),
     "bad.yml: datasets[0].type: Input should be a valid string"),
    # Gemma 3's template ends turns with <end_of_turn>; the tiny base's EOS is <|im_end|>: Axolotl would
    # train no turn's end (tests/test_real_gemma.py: the same refusal for Gemma's own <eos>).
    ("turn-end-never-trained", _set("chat_template", "gemma3"),
     ("bad.yml: chat_template: gemma3: the base's end-of-sequence token '<|im_end|>' is not in this template, "
      "so no turn's end is trained and the model never learns to stop; set eot_tokens: [\"<end_of_turn>\"]")),
    ("turn-end-never-trained-per-dataset", _set("datasets.0.chat_template", "llama3"),
     ("bad.yml: datasets[0].chat_template: llama3: the base's end-of-sequence token '<|im_end|>' is not in this "
      "template, so no turn's end is trained and the model never learns to stop; set eot_tokens: [\"<|eot_id|>\"]")),
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
    ids = [c[0] for c in CATALOGUE]
    assert len(ids) == len(set(ids)), "each kind once"
    kinds = {"files and rows": 9, "schema": 8, "cpu": 1, "trainability": 12}
    assert len(ids) >= sum(kinds.values()), f"{len(ids)} kinds"
    assert len(ids[ids.index("learning-rate-not-a-number"):]) >= kinds["trainability"]


@pytest.mark.parametrize("fix", [{"eot_tokens": ["<end_of_turn>"]}, {"train_on_eos": "none"}],
                         ids=["eot-tokens-named", "ends-not-trained-on-purpose"])
def test_a_template_whose_turn_end_is_named_or_unwanted_is_accepted(tmp_path: Path, fix: dict) -> None:
    cfg = {**_quickstart(), "chat_template": "gemma3", **fix}
    assert validate(_write(tmp_path, cfg), axolotl_schema=False).axolotl["chat_template"] == "gemma3"


def test_a_base_without_a_chat_template_needs_one_named(tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "tokenizer_config.json").write_text('{"eos_token": {"content": "<eos>"}}')
    cfg = {**_quickstart(), "base_model": "./base", "chat_template": "tokenizer_default"}
    with pytest.raises(LatheError) as err:
        validate(_write(tmp_path, cfg), axolotl_schema=False)
    assert str(err.value) == ("bad.yml: chat_template: the base has no chat template of its own: name one "
                              "(e.g. chatml, gemma3, llama3) or give chat_template_jinja")


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
    cfg["fp16"] = True
    with pytest.raises(LatheError) as err:
        validate(_write(tmp_path, cfg))
    assert str(err.value).splitlines() == [
        "bad.yml: datasets[0].path: no such file 'x.jsonl'",
        ("bad.yml: fp16: fp16 mixed precision needs a GPU; use bf16 or fp32 on CPU (this recipe trains on CPU: "
         "lathe.resources.gpus_per_node is 0)"),
    ]


def test_lathe_turns_the_cuda_only_lora_kernels_off_on_cpu_and_only_there(tmp_path: Path) -> None:
    """A CPU recipe need not spell the four kernel settings: Lathe sets them (the driver applies it, and
    the quickstart trains without them); a GPU recipe keeps Axolotl's default."""
    from orchestrator.recipe import CPU_UNSAFE_KERNELS, for_cpu

    cfg = _quickstart()
    assert not set(CPU_UNSAFE_KERNELS) & set(cfg), "the quickstart leaves them to Lathe"
    cfg["lathe"]["resources"]["gpus_per_node"] = None
    cfg["lora_o_kernel"] = False
    path = _write(tmp_path, cfg)
    assert validate(path, gpus_per_node=1, axolotl_schema=False).cpu_changes == []
    on_cpu = validate(path, gpus_per_node=0, axolotl_schema=False)
    assert on_cpu.cpu_changes == ["lora_mlp_kernel", "lora_qkv_kernel", "lora_embedding_kernel"]
    applied, changed = for_cpu(on_cpu.axolotl)
    assert changed == on_cpu.cpu_changes and all(applied[k] is False for k in CPU_UNSAFE_KERNELS)
    assert "lora_mlp_kernel" not in on_cpu.axolotl, "the recipe itself is left as written"


# Keys Axolotl's own examples still carry, blank, that its schema no longer lists: Axolotl ignores them.
EXAMPLE_LEFTOVERS = {"debug": None, "fsdp": None, "xpos_rope": None}


def test_a_recipe_copied_from_axolotls_examples_validates_with_one_warning_a_key(tmp_path: Path) -> None:
    cfg = _quickstart()
    cfg.update(EXAMPLE_LEFTOVERS)
    parsed = validate(_write(tmp_path, cfg))
    assert parsed.warnings == [f"bad.yml: {key}: not a setting this Axolotl knows; ignored, as Axolotl ignores it"
                               for key in EXAMPLE_LEFTOVERS]
    cfg["lerning_rate"] = 0.001  # a misspelling is still an error, leftovers or not
    with pytest.raises(LatheError, match=r"^bad.yml: lerning_rate: unknown key; did you mean 'learning_rate'\?$"):
        validate(_write(tmp_path / "again", cfg))


def test_lathe_validate_prints_warnings_apart_from_the_verdict(tmp_path: Path) -> None:

    from tests.support.cli import lathe

    cfg = _quickstart()
    cfg.update(EXAMPLE_LEFTOVERS)
    proc = lathe("validate", str(_write(tmp_path, cfg)))
    assert proc.returncode == 0 and proc.stdout == "bad.yml: ok\n", proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [
        *(f"warning: bad.yml: {k}: not a setting this Axolotl knows; ignored, as Axolotl ignores it"
          for k in EXAMPLE_LEFTOVERS),
        ("note: bad.yml: lora_mlp_kernel, lora_qkv_kernel, lora_o_kernel, lora_embedding_kernel set to false: "
         "training on CPU (Axolotl's Triton LoRA kernels need CUDA)")], proc.stderr


def test_relative_paths_follow_the_recipe_not_the_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert validate(REPO / "recipes" / "quickstart.yml", axolotl_schema=False).name == "quickstart.yml"


def test_the_names_read_from_source_are_the_names_the_libraries_define() -> None:
    """`known_names` parses transformers' and Axolotl's source instead of importing it (~20 s): the
    lists must be exactly what the imported modules define, or an upgrade moved something."""
    import pkgutil

    import axolotl.prompt_strategies as strategies
    from axolotl.utils.data.wrappers import DATASET_HANDLERS
    from axolotl.utils.schemas.enums import CustomSupportedOptimizers
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    from orchestrator import trainability

    known = trainability.known_names()
    assert known.optimizers == {o.value for o in OptimizerNames} | {o.value for o in CustomSupportedOptimizers}
    assert known.schedulers == {s.value for s in SchedulerType} | {"one_cycle", "rex"}
    modules = {m.name for m in pkgutil.iter_modules(strategies.__path__) if not m.name.startswith("_")}
    assert known.dataset_types == modules | set(DATASET_HANDLERS) | {"stepwise_supervised"}


def _validate_in_a_fresh_process(recipe: Path, cache: Path) -> tuple[int, list[str], bool]:
    """`validate(recipe)` in a new interpreter: exit status, stderr lines, and whether torch was imported."""
    import os
    import subprocess
    import sys

    code = ("import sys\nfrom orchestrator.errors import LatheError\nfrom orchestrator.validate import validate\n"
            "try:\n    parsed = validate(sys.argv[1])\nexcept LatheError as exc:\n"
            "    print(exc, file=sys.stderr); sys.exit(2)\n"
            "for w in parsed.warnings: print('warning:', w, file=sys.stderr)\n"
            "print('torch' in sys.modules)\n")
    env = dict(os.environ, LATHE_CACHE=str(cache))
    env.pop("LATHE_NO_VALIDATION_CACHE", None)
    proc = subprocess.run([sys.executable, "-c", code, str(recipe)], capture_output=True, text=True, env=env,
                          timeout=600, check=False)
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("warning:", "bad.yml"))]
    return proc.returncode, lines, proc.stdout.strip() == "True"


def test_a_recipe_accepted_once_is_not_checked_again_until_it_changes(tmp_path: Path) -> None:
    """The second validation of an unchanged recipe skips Axolotl's import (no torch) and gives the
    same warnings; a touched dataset file, or a value of the wrong type, has Axolotl check it again."""
    cache = tmp_path / "cache"
    cfg = _quickstart()
    cfg.update(EXAMPLE_LEFTOVERS)
    recipe = _write(tmp_path / "recipe", cfg)

    first = _validate_in_a_fresh_process(recipe, cache)
    assert first[0] == 0 and first[2], "the first validation runs Axolotl's schema (it imports torch)"
    assert len(first[1]) == len(EXAMPLE_LEFTOVERS), first
    again = _validate_in_a_fresh_process(recipe, cache)
    assert again == (0, first[1], False), "accepted before, unchanged: no import, the same warnings"

    (recipe.parent / "data" / "wrong_facts.jsonl").touch()
    assert _validate_in_a_fresh_process(recipe, cache)[2], "a touched dataset file is checked again"

    cfg["datasets"][0]["type"] = 5  # a type error only Axolotl's schema sees
    recipe.write_text(yaml.safe_dump(cfg, sort_keys=False))
    refused = _validate_in_a_fresh_process(recipe, cache)
    assert refused[:2] == (2, ["bad.yml: datasets[0].type: Input should be a valid string"]), refused
    assert _validate_in_a_fresh_process(recipe, cache)[:2] == refused[:2], "a refusal is never remembered"


ACCEPTED = {"num_epochs": 0.5, "max_steps": -1, "save_steps": 0.25}


def test_values_hf_and_axolotl_accept_are_accepted(tmp_path: Path) -> None:
    """Half an epoch and HF's "max_steps not set" were refused by Lathe's own ranges; HF's TrainingArguments
    takes each, as Axolotl's schema does (and HF refuses 1.5 logging steps, which validation refuses too).
    One recipe with all three: one Axolotl check instead of three (a refusal names its field)."""
    from transformers import TrainingArguments

    for key, value in ACCEPTED.items():
        hf_name = {"num_epochs": "num_train_epochs"}.get(key, key)
        TrainingArguments(output_dir=str(tmp_path / "out"), **{hf_name: value}, save_strategy="steps")
    with pytest.raises(ValueError, match="logging_steps"):
        TrainingArguments(output_dir=str(tmp_path / "out"), logging_steps=1.5)
    cfg = _quickstart()
    cfg.update(ACCEPTED)
    validate(_write(tmp_path, cfg))


def test_a_fraction_of_logging_steps_is_axolotls_refusal_not_lathes(tmp_path: Path) -> None:
    """HF takes `logging_steps: 0.01` (a hundredth of the run); Axolotl 0.21's schema types it as a whole
    number and refuses it. Lathe's range check lets it through (it follows HF), so the line is Axolotl's."""
    from transformers import TrainingArguments

    TrainingArguments(output_dir=str(tmp_path / "out"), logging_steps=0.01)
    cfg = _quickstart()
    cfg["logging_steps"] = 0.01
    with pytest.raises(LatheError) as err:
        validate(_write(tmp_path, cfg))
    assert str(err.value) == "bad.yml: logging_steps: Input should be a valid integer, got a number with a fractional part"
