"""Seed 004 on a real model, timed: `lathe run recipes/smollm2-tool-calls.yml` (SmolLM2-135M-Instruct taught
to call tools), then BFCL per level from its report: accuracy per category, each level's change against
full precision with its exact paired test, and the base beside the fine-tune. Asserts nothing.

    .venv/bin/python bench/tool_calls.py [RECIPE] [--runs-dir DIR]

Needs the models (`make models`). About 25 min on 2 cores (24.5 measured).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from real_models import arguments, timed_run

from orchestrator.evaluation import benchmark_report
from orchestrator.evaluation.deltas import describe
from orchestrator.evaluation.gates import as_delta
from orchestrator.evaluation.results import Report
from orchestrator.recipe import load
from orchestrator.run.layout import RunDir

BIN = Path(sys.executable).parent


def by_category(report: Report, recipe) -> str:
    """The fine-tune's full precision against the base per BFCL category, each with its exact paired test:
    the overall delta can hide a gain on calls and a loss on irrelevance."""
    from orchestrator.evaluation.deltas import paired_delta
    from orchestrator.evaluation.gates import full_precision

    full, base = full_precision(report.levels), report.base_benchmarks.get("bfcl")
    if full is None or base is None or "bfcl" not in full.benchmarks:
        return "per category: no base or no full precision"
    out = []
    for category in recipe.lathe.eval.benchmarks.bfcl.categories:
        keys = [k for k in base.items if k.rsplit("_", 1)[0] == category]  # BFCL ids are <category>_<n>
        d = paired_delta({k: base.items[k] for k in keys}, {k: full.benchmarks["bfcl"].items[k] for k in keys})
        if d is not None:
            out.append(f"{category} {describe(d)}")
    return f"the fine-tune ({full.level}) against the base, per category: " + "; ".join(out)


def rejudged(report: Report, recipe) -> str:
    """Every level's BFCL answers judged again by bfcl-eval's own decoder and checker (tests/support/
    bfcl_rejudge.py), against Lathe's per-item verdicts."""
    from orchestrator.evaluation.benchmarks import bfcl
    from tests.support.bfcl_rejudge import verdict

    prompts = {p.id: p for p in bfcl.prompts(recipe.lathe.eval.benchmarks.bfcl)}
    agree = total = 0
    for got in [lv.benchmarks.get("bfcl") for lv in report.levels] + [report.base_benchmarks.get("bfcl")]:
        for item, detail in (got.details if got else {}).items():
            total += 1
            agree += verdict(prompts[item], detail["output"]) == detail["right"]
    return f"bfcl-eval's own decoder and checker agree with Lathe's verdict on {agree} of {total} answers"


def modelfile_gap(run: RunDir, recipe) -> str:
    """The runtime gap for tool calls: each BFCL prompt as the published Modelfile's TEMPLATE renders it
    (Go's own text/template, tools in the system message) against what llama.cpp's chat template rendered
    for the evaluation (llama-cpp-python's formatter, the GGUF's own template)."""
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    from orchestrator.evaluation.benchmarks import bfcl
    from orchestrator.publish import deploy_targets as dt
    from orchestrator.publish.companion import chat_spec
    from tests.support.gotemplate import go_render

    spec, problem = chat_spec(run.export_dir, [])
    if spec is None:
        return f"Modelfile: no TEMPLATE ({problem})"
    template = dt.ollama_template(spec)
    gguf = run.export_dir / "gguf" / "model-f16.gguf"
    vocab = llama_cpp.Llama(model_path=str(gguf), vocab_only=True, verbose=False)
    text = vocab._model.token_get_text
    formatter = Jinja2ChatFormatter(vocab.metadata["tokenizer.chat_template"], eos_token=text(vocab.token_eos()),
                                    bos_token=text(vocab.token_bos()))
    prompts = bfcl.prompts(recipe.lathe.eval.benchmarks.bfcl)
    same = 0
    for prompt in prompts:
        messages = bfcl.with_tools_in_system(prompt.messages, prompt.tools or [])
        same += go_render(template, messages) == formatter(messages=messages).prompt
    tools = ".Tools" in template
    return (f"Modelfile TEMPLATE (Go's text/template) against llama.cpp's chat template, tools in the system "
            f"message: {same} of {len(prompts)} BFCL prompts rendered identically; Ollama's `tools` field: "
            f"{'rendered' if tools else 'refused (the TEMPLATE has no .Tools)'}")


def main() -> None:
    args = arguments(__doc__, "smollm2-tool-calls.yml")
    recipe = load(args.recipe)
    proc, wall, run = timed_run(args.recipe, args.runs_dir)
    # A failed gate exits 5 with the report written: the table is still the point.
    report_path = run.eval_dir / "report.json"
    if not report_path.is_file():
        sys.exit(f"lathe run failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    report = Report.load(report_path)
    print("BFCL per level (accuracy; simple/multiple/parallel/irrelevance; change against full precision):")
    for level in report.levels:
        got = level.benchmarks.get("bfcl")
        if got is None:
            continue
        cats = " ".join(f"{got.metrics.get(c, float('nan')):.2f}" for c in recipe.lathe.eval.benchmarks.bfcl.categories)
        d = as_delta(got.delta)
        print(f"  {level.level:10s} {level.size_bytes / 1e6:5.0f} MB  {got.metrics['accuracy']:.3f}  [{cats}]  "
              f"{describe(d) if d else 'full precision'}{'  SIGNIFICANT DROP' if d and d.significant_drop else ''}")
    base = report.base_benchmarks.get("bfcl")
    if base is not None:
        print(f"  {'base':10s}           {base.metrics['accuracy']:.3f}")
    for line in [benchmark_report.bought_line(report.levels, report.base_benchmarks),
                 *benchmark_report.holds_lines(report.levels, recipe.lathe.eval.gates), *report.gate_failures]:
        if line:
            print(line)
    print(by_category(report, recipe))
    print(rejudged(report, recipe))
    print(modelfile_gap(run, recipe))
    print(f"report: {report_path}")
    print(json.dumps({"wall_min": round(wall / 60, 1), "levels": len(report.levels)}))


if __name__ == "__main__":
    main()
