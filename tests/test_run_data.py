"""A run's own data (`orchestrator.run`): the record, JSONL, states and the job's arguments. Fast: no
Ray, no model."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from orchestrator.profiles import ClusterProfile
from orchestrator.remote.submit import SubmitOptions, job_args
from orchestrator.run.job_args import JOB_MODULE, JobArgs
from orchestrator.run.layout import METRICS, RunDir, RunRecord, parse_jsonl
from orchestrator.run.state import ACTIVE, TERMINAL, RunState, is_terminal
from orchestrator.store import StoreConfig


def test_the_record_round_trips_typed_and_keeps_fields_it_does_not_know(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.record() == RunRecord()
    run.update(run_id="r-1", state=RunState.RUNNING, workers=2, versions={"ray": "2.60.0"}, note="kept")
    run.update(state=RunState.SUCCEEDED, final_loss=0.125)
    record = run.record()
    assert (record.run_id, record.state, record.workers, record.final_loss) == ("r-1", "SUCCEEDED", 2, 0.125)
    assert record.versions == {"ray": "2.60.0"} and record.model_extra == {"note": "kept"}
    assert RunRecord.parse(b"") == RunRecord() and RunRecord.parse("{half") == RunRecord()


def test_jsonl_skips_a_half_written_last_line_and_blank_lines(tmp_path: Path) -> None:
    (tmp_path / METRICS).write_text('{"step": 1}\n\n{"step": 2}\n[3]\n{"step": 3, "lo')
    assert RunDir(tmp_path).metrics() == [{"step": 1}, {"step": 2}]
    assert parse_jsonl("") == []


def test_recipe_paths_resolve_in_inputs_for_a_pulled_run_else_beside_the_recipe(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    assert run.recipe_dir() == run.path
    run.update(recipe=str(tmp_path / "recipes" / "q.yml"))
    assert run.recipe_dir() == tmp_path / "recipes"
    run.inputs_dir.mkdir()
    assert run.recipe_dir() == run.inputs_dir


def test_every_state_is_active_or_terminal_and_unknown_text_ends_a_wait() -> None:
    assert ACTIVE | TERMINAL == set(RunState) and not ACTIVE & TERMINAL
    assert RunState.SUCCEEDED.is_terminal() and RunState.TRAINED.is_active()
    assert is_terminal("FAILED") and not is_terminal("EXPORTING") and is_terminal("SOMETHING-NEW")


def test_the_job_parses_exactly_what_submit_puts_on_its_command_line() -> None:
    profile = ClusterProfile(name="gpu box", ray_address="http://10.0.0.1:8265", python="/opt/venv/bin/python",
                             store=StoreConfig(uri="s3://bucket/runs", endpoint_url="http://10.0.0.2:9000"),
                             pushgateway_url="http://10.0.0.3:9091", price_per_gpu_hour=2.5)
    built = job_args(profile, "q-20261201-000000-abcd", "my recipe.yml", SubmitOptions(workers=4, export=False),
                     attempt=3, base_file=".lathe-base/my model.gguf")
    argv = shlex.split(built.entrypoint(profile.python))
    assert argv[:3] == ["/opt/venv/bin/python", "-m", JOB_MODULE]
    parsed = JobArgs.parse(argv[3:])
    assert parsed == built
    assert (parsed.cluster, parsed.recipe, parsed.workers, parsed.export, parsed.attempt) == \
        ("gpu box", "my recipe.yml", 4, False, 3)
    assert parsed.pushgateway == "http://10.0.0.3:9091" and parsed.price_per_gpu_hour == 2.5
    assert parsed.base_file == ".lathe-base/my model.gguf"
    override = job_args(profile, "r", "q.yml", SubmitOptions(pushgateway="http://127.0.0.1:9091"))
    assert override.pushgateway == "http://127.0.0.1:9091", "--pushgateway on the command line wins"
    assert "--export" not in override.to_argv() and "--attempt" not in override.to_argv(), "defaults stay off"


def test_a_gguf_base_outside_the_recipes_directory_is_shipped_beside_its_data(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`base_model: ~/models/x.gguf`: the submit ships the file as it ships the recipe's data (inline, or
    through the store when large) at .lathe-base/, and names it in the job's arguments; the recipe's text
    travels unchanged. Any other file outside the recipe's directory is still refused in one line."""
    from orchestrator.errors import RecipeError
    from orchestrator.recipe import load
    from orchestrator.remote.submit import package

    models, recipes = tmp_path / "models", tmp_path / "recipes"
    models.mkdir(), (recipes / "data").mkdir(parents=True)
    (models / "base.Q4_1.gguf").write_bytes(b"GGUF" + b"\0" * 2000)
    (recipes / "data" / "facts.jsonl").write_text('{"messages": []}\n')
    text = "base_model: ../models/base.Q4_1.gguf\ndatasets:\n  - path: data/facts.jsonl\n    type: chat_template\n"
    (recipes / "r.yml").write_text(text)
    recipe = load(recipes / "r.yml")
    assert recipe.outside_base() == (models / "base.Q4_1.gguf").resolve()
    assert recipe.shipped_base() == ".lathe-base/base.Q4_1.gguf" and recipe.local_files() == ["data/facts.jsonl"]
    inline = tmp_path / "inline"
    inline.mkdir()
    assert package(recipe, inline) == []
    assert (inline / ".lathe-base" / "base.Q4_1.gguf").read_bytes() == (models / "base.Q4_1.gguf").read_bytes()
    assert (inline / "r.yml").read_text() == text and (inline / "data" / "facts.jsonl").is_file()
    monkeypatch.setenv("LATHE_INLINE_LIMIT_BYTES", "1000")
    large = tmp_path / "large"
    large.mkdir()
    assert package(recipe, large) == [((models / "base.Q4_1.gguf").resolve(), ".lathe-base/base.Q4_1.gguf")]
    assert not (large / ".lathe-base").exists()
    (recipes / "r.yml").write_text(text.replace("data/facts.jsonl", "../models/base.Q4_1.gguf"))
    with pytest.raises(RecipeError, match=r"datasets\[0\]\.path.*outside the recipe's directory"):
        load(recipes / "r.yml").local_files()


def test_the_job_refuses_a_command_line_without_the_run(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        JobArgs.parse(["--recipe", "q.yml", "--store-uri", "s3://b/p"])
    assert exited.value.code == 2 and "--run-id" in capsys.readouterr().err
