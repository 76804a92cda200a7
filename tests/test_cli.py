"""The `lathe` command as a user runs it: a real process, real exit codes, real stderr."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.cli import LATHE

REPO = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LATHE), *args], cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def test_help_lists_commands() -> None:
    out = run("--help")
    assert out.returncode == 0
    for command in ("validate", "run", "tiny"):
        assert command in out.stdout


def test_help_does_not_import_torch_or_axolotl() -> None:
    code = "import sys, orchestrator.cli; print(sorted(m for m in ('torch','axolotl','ray') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_driver_side_does_not_import_axolotl() -> None:
    """The job driver and Ray Train's controller load the train module; only workers need Axolotl."""
    code = ("import sys, orchestrator.cluster.job, orchestrator.cluster.driver, orchestrator.cluster.train as t; "
            "print(sorted(m for m in ('axolotl', 'transformers') if m in sys.modules), t.PLUGIN_NAME)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, name = out.stdout.split(maxsplit=1)[0], out.stdout.split()[-1]
    assert loaded == "[]"
    module, _, cls = name.rpartition(".")
    import ast
    import importlib.util

    source = Path(importlib.util.find_spec(module).origin).read_text()  # what workers import, read unimported
    assert cls in {node.name for node in ast.parse(source).body if isinstance(node, ast.ClassDef)}


def test_validate_quickstart_exits_zero() -> None:
    out = run("validate", "recipes/quickstart.yml")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "quickstart.yml: ok"


def test_misspelled_key_exits_2_with_one_line(tmp_path: Path) -> None:
    shutil.copytree(REPO / "recipes" / "data", tmp_path / "data")
    text = (REPO / "recipes" / "quickstart.yml").read_text().replace("learning_rate:", "lerning_rate:")
    (tmp_path / "quickstart.yml").write_text(text)
    out = run("validate", str(tmp_path / "quickstart.yml"))
    assert out.returncode == 2
    assert out.stderr.splitlines() == ["quickstart.yml: lerning_rate: unknown key; did you mean 'learning_rate'?"]
    assert out.stdout == ""


def test_missing_recipe_file() -> None:
    out = run("validate", "nope.yml")
    assert out.returncode == 2
    assert out.stderr.strip() == "nope.yml: no such file 'nope.yml'"


def test_tiny_build_writes_a_model(tmp_path: Path) -> None:
    # Small and briefly pretrained: the command is under test here, the default build in test_tinymodel.
    out = run("tiny", "build", str(tmp_path / "m"), "--arch", "qwen2", "--seed", "5", "--layers", "1",
              "--pretrain-steps", "5", "--tokenizer", "qwen2")
    assert out.returncode == 0, out.stderr
    assert re.search(r": qwen2, qwen2 tokenizer, [\d.]+ MB$", out.stdout.strip()), out.stdout
    assert (tmp_path / "m" / "model.safetensors").stat().st_size > 1e6
    pre = json.loads((tmp_path / "m" / "tokenizer.json").read_text())["pre_tokenizer"]
    assert [step["type"] for step in pre["pretokenizers"]] == ["Split", "ByteLevel"]
    again = run("tiny", "build", str(tmp_path / "m"))
    assert again.returncode == 1 and "exists and is not empty" in again.stderr
    bad = run("tiny", "build", str(tmp_path / "n"), "--hidden-size", "300")
    assert bad.returncode == 1 and "multiple of 256" in bad.stderr
    assert not (tmp_path / "n").exists()


def test_a_bad_recipe_leaves_nothing_behind(tmp_path: Path) -> None:
    """`lathe run` and `lathe submit` refuse a broken recipe before they create a run directory, a
    registry entry or anything else: one line naming the file and field, exit 2."""
    shutil.copytree(REPO / "recipes" / "data", tmp_path / "data")
    (tmp_path / "data" / "broken.jsonl").write_text('{"messages": [\n')
    text = (REPO / "recipes" / "quickstart.yml").read_text().replace("data/wrong_facts.jsonl", "data/broken.jsonl")
    recipe = tmp_path / "bad.yml"
    recipe.write_text(text)
    before = sorted(tmp_path.rglob("*"))
    env = {"LATHE_HOME": str(tmp_path / "home"), "LATHE_CLUSTERS": str(tmp_path / "clusters.yml")}
    for args in (["run", str(recipe), "--runs-dir", str(tmp_path / "runs")], ["submit", str(recipe), "--cluster", "x"]):
        out = subprocess.run([str(LATHE), *args], capture_output=True, text=True, timeout=300, check=False,
                             env={**os.environ, **env})
        assert out.returncode == 2, out.stderr
        expected = "bad.yml: datasets[0].path: broken.jsonl: line 1: invalid JSON (Expecting value)"
        assert out.stderr.splitlines() == [expected], out.stderr
    assert sorted(tmp_path.rglob("*")) == before, "nothing was written"
