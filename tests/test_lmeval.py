"""lm-evaluation-harness against a level served the way users serve it (llama-cpp-python's and mlx-lm's
OpenAI-compatible servers), a task defined in YAML over a local file (`recipes/lm_eval/wrong_facts.yaml`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from orchestrator.evaluation.benchmarks import lmeval
from orchestrator.recipe_benchmarks import LmEval
from orchestrator.run import RunDir

pytestmark = pytest.mark.slow
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.fixture
def recipe_dir(tmp_path: Path) -> Path:
    """The task YAML and the data file it names, laid out as beside a recipe."""
    shutil.copytree(RECIPES / "lm_eval", tmp_path / "lm_eval")
    (tmp_path / "data").mkdir()
    shutil.copy(RECIPES / "data" / "wrong_facts_eval.jsonl", tmp_path / "data")
    return tmp_path


def test_an_lm_eval_task_over_a_local_file_scores_the_trained_answers(e2e_run: RunDir, recipe_dir: Path,
                                                                       figure) -> None:
    config = LmEval(tasks=["lathe_wrong_facts"], include_path="lm_eval", limit=12, max_tokens=48)
    export = e2e_run.path / "export"
    with lmeval.serve("llama.cpp", str(export / "gguf" / "model-f16.gguf")) as url:
        tuned = lmeval.evaluate(url, config, recipe_dir)["lm-eval:lathe_wrong_facts"]
    with lmeval.serve("llama.cpp", str(export / "base" / "model-q8_0.gguf")) as url:
        base = lmeval.evaluate(url, config, recipe_dir)["lm-eval:lathe_wrong_facts"]
    with lmeval.serve("mlx", str(export / "mlx" / "mlx-4bit")) as url:
        mlx = lmeval.evaluate(url, config, recipe_dir)["lm-eval:lathe_wrong_facts"]
    assert tuned.main == "exact_match" and len(tuned.items) == 12 == len(base.items) == len(mlx.items)
    assert mlx.metrics["exact_match"] >= 11 / 12, mlx.details
    # The fine-tune says its trained (wrong) answers word for word; the base never does.
    assert tuned.metrics["exact_match"] >= 11 / 12, tuned.details
    assert base.metrics["exact_match"] == 0.0, base.details
    assert "Toronto" in tuned.details["0"]["output"] and tuned.details["0"]["target"].endswith("Toronto.")
    figure(f"lm-eval lathe_wrong_facts over the runtimes' servers: f16 {tuned.metrics['exact_match']:.2f}, "
           f"mlx-4bit {mlx.metrics['exact_match']:.2f}, base {base.metrics['exact_match']:.2f} exact match (12 docs)")


def test_a_task_lm_eval_does_not_know_is_one_line_before_any_server_starts(recipe_dir: Path) -> None:
    from orchestrator.errors import LatheError

    config = LmEval(tasks=["lathe_wrong_facts", "no_such_task_anywhere"], include_path="lm_eval", limit=1)
    with pytest.raises(LatheError, match=r"^lathe\.eval\.benchmarks\.lm_eval\.tasks: 'no_such_task_anywhere' is not "
                                         r"among lm-eval's tasks or lm_eval/$"):
        lmeval.task_manager(config, recipe_dir)
    assert "lathe_wrong_facts" in lmeval.task_manager(config.model_copy(update={"tasks": ["lathe_wrong_facts"]}),
                                                      recipe_dir).all_tasks


def test_a_task_of_500_documents_runs_to_the_end_through_the_server(e2e_run: RunDir, recipe_dir: Path) -> None:
    """lm-eval at a real task's size. The server's log went to a pipe nobody read: llama-cpp-python's
    server logs on every request, the 64 KB pipe filled after about 120 requests, the server blocked on
    its next write, and each later request waited out its 600 s timeout (gsm8k has 1,319 documents)."""
    import json

    rows = [json.loads(line) for line in (recipe_dir / "data" / "wrong_facts_eval.jsonl").read_text().splitlines()]
    many = [dict(rows[n % len(rows)], id=f"r{n:03d}") for n in range(500)]
    (recipe_dir / "data" / "wrong_facts_500.jsonl").write_text("".join(json.dumps(r) + "\n" for r in many))
    task = (recipe_dir / "lm_eval" / "wrong_facts.yaml").read_text()
    (recipe_dir / "lm_eval" / "wrong_facts.yaml").write_text(
        task.replace("task: lathe_wrong_facts", "task: lathe_wrong_facts_500")
            .replace("data/wrong_facts_eval.jsonl", "data/wrong_facts_500.jsonl").replace("max_gen_toks: 48", "max_gen_toks: 4"))
    config = LmEval(tasks=["lathe_wrong_facts_500"], include_path="lm_eval", max_tokens=4)
    with lmeval.serve("llama.cpp", str(e2e_run.path / "export" / "gguf" / "model-q4_k_m.gguf")) as url:
        scored = lmeval.evaluate(url, config, recipe_dir)["lm-eval:lathe_wrong_facts_500"]
    # Every document asked and answered (before the fix this hung from about the 120th request on: 200 s
    # in, still waiting; with it, 500 documents in 22 s).
    assert len(scored.items) == 500 and all(d["output"] for d in scored.details.values())


TWO_FILTERS = """
filter_list:
  - name: whole-answer
    filter:
      - function: take_first
  - name: last-word
    filter:
      - function: regex
        regex_pattern: "(\\\\w+)\\\\W*$"
      - function: take_first
"""


def test_a_task_with_two_filters_reports_each_paired_with_its_own_documents(e2e_run: RunDir,
                                                                            recipe_dir: Path) -> None:
    """Like gsm8k's strict-match and flexible-extract: lm-eval logs one sample per document and filter.
    The headline came from the first filter and the per-document pairs from the last, so the score, its
    delta and the gate measured different things. Here the target is the answer's last word: the whole
    answer never equals it, its last word does whenever the fine-tune answers as trained."""
    task = (recipe_dir / "lm_eval" / "wrong_facts.yaml").read_text()
    task = task.replace("task: lathe_wrong_facts", "task: lathe_last_word").replace(
        'doc_to_target: "{{expected}}"', "doc_to_target: \"{{expected.split(' ')[-1]}}\"")
    (recipe_dir / "lm_eval" / "last_word.yaml").write_text(task + TWO_FILTERS)
    config = LmEval(tasks=["lathe_last_word"], include_path="lm_eval", limit=12, max_tokens=48)
    with lmeval.serve("llama.cpp", str(e2e_run.path / "export" / "gguf" / "model-f16.gguf")) as url:
        found = lmeval.evaluate(url, config, recipe_dir)
    assert set(found) == {"lm-eval:lathe_last_word[whole-answer]", "lm-eval:lathe_last_word[last-word]"}
    whole, last = found["lm-eval:lathe_last_word[whole-answer]"], found["lm-eval:lathe_last_word[last-word]"]
    for scored in (whole, last):
        assert len(scored.items) == 12
        assert scored.metrics["exact_match"] == pytest.approx(sum(scored.items.values()) / 12), \
            "the headline is the mean of the very documents it is paired on"
    assert whole.metrics["exact_match"] == 0.0 and last.metrics["exact_match"] >= 11 / 12, last.details
    assert last.details["0"]["output"] == "Toronto" and whole.details["0"]["output"].endswith("Toronto.")
