"""Stage: report. One table (levels as rows), a quality-vs-size plot, the loss curve."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import manifest as mf
from orchestrator.evaluation.results import Evaluation, LevelResult, Report
from orchestrator.levels import USABLE_FRACTION
from orchestrator.run.layout import RunDir

if TYPE_CHECKING:
    from rich.console import Console

COLUMNS = ("level", "runtime", "size MB", "bpw", "ppl", "Δppl %", "mean KLD", "p99 KLD", "top-1",
           "task", "flips", "load s", "prompt tok/s", "gen tok/s", "peak RSS MB", "fits (GB)")


def rows(results: list[LevelResult]) -> list[list[str]]:
    out = []
    for r in results:
        q = r.quality
        out.append([
            r.level, r.runtime, f"{r.size_bytes / 1e6:.2f}",
            f"{r.bits_per_weight:.2f}" if r.bits_per_weight else "-",
            f"{q['perplexity']:.2f}", f"{q['ppl_change_pct']:+.2f}", f"{q['mean_kld']:.5f}", f"{q['p99_kld']:.5f}",
            f"{q['top1_agreement']:.3f}", "-" if r.task_score is None else f"{r.task_score:.2f}",
            "-" if r.flips is None else str(r.flips), f"{r.load_seconds:.2f}", f"{r.prompt_tps:.0f}",
            f"{r.gen_tps:.0f}", f"{r.peak_rss_bytes / 1e6:.0f}", ",".join(map(str, r.fits_gb)) or "none",
        ])
    return out


def machine() -> dict[str, str]:
    return {"system": platform.system(), "machine": platform.machine(), "processor": platform.processor(),
            "python": platform.python_version()}


def plot_quality_vs_size(results: list[LevelResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for runtime, marker in (("llama.cpp", "o"), ("mlx", "s")):
        pts = [r for r in results if r.runtime == runtime]
        if not pts:
            continue
        xs = [r.size_bytes / 1e6 for r in pts]
        ys = [max(r.quality["mean_kld"], 1e-9) for r in pts]
        ax.scatter(xs, ys, marker=marker, label=runtime)
        for r, x, y in zip(pts, xs, ys, strict=True):
            ax.annotate(r.level, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("size on disk (MB)")
    ax.set_ylabel("mean KL divergence from full precision")
    ax.set_yscale("log")
    ax.set_title("Quality vs size")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_loss(metrics: list[dict[str, Any]], path: Path) -> bool:
    points = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    if not points:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot([p[0] for p in points], [p[1] for p in points], linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def sweep_rows(evaluation: Evaluation) -> tuple[list[str], list[list[str]]]:
    """Task score per level (rows) and sampling setting (columns); empty when nothing was swept."""
    from orchestrator.evaluation.tasks import describe_sampling

    if len(evaluation.samplings) < 2 or not any(r.sweep for r in evaluation.results):
        return [], []
    default = evaluation.samplings[0]
    header = ["level", describe_sampling(default, default)] + [describe_sampling(s, default)
                                                               for s in evaluation.samplings[1:]]

    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    body = [[r.level, fmt(r.task_score)] + [fmt(x["task_score"]) for x in r.sweep] for r in evaluation.results]
    return header, body


def write(evaluation: Evaluation, run: RunDir, manifest: mf.Manifest, ref_meta: dict[str, Any],
          context: int) -> None:
    from orchestrator.evaluation import arena

    out, results, failures = evaluation.out, evaluation.results, evaluation.failures
    out.mkdir(parents=True, exist_ok=True)
    here = machine()
    Report(
        run_id=manifest.run_id, machine=here, context=context,
        reference={"perplexity": ref_meta["perplexity"], "tokens": ref_meta["scored_tokens"],
                   "top_k": ref_meta["top_k"]},
        levels=results, gate_failures=failures, base_task_score=evaluation.base_task_score,
        samplings=[s.model_dump() for s in evaluation.samplings], arena=arena.as_json(evaluation.rounds),
    ).save(out)
    plot_quality_vs_size(results, out / "quality_vs_size.png")
    has_loss = plot_loss(run.metrics(), out / "loss_curve.png")

    lines = [f"# Evaluation of {manifest.run_id}", "",
             (f"Measured on {here['system']} {here['machine']}, context {context} tokens. "
             f"Reference: full-precision perplexity {ref_meta['perplexity']:.3f} over "
             f"{ref_meta['scored_tokens']} held-out tokens (top-{ref_meta['top_k']} log-probs)."), "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows(results)]
    lines += ["", ("KLD folds the vocabulary outside the reference's top-K into one outcome (a lower bound). "
              "Flips: eval items right at full precision (f16 GGUF) and wrong at that level. "
              f"Fits: memory tiers where weights + f16 KV cache at the context length stay under "
              f"{USABLE_FRACTION:.0%} of RAM."), ""]
    if evaluation.base_task_score is not None:
        lines += [f"Base model task score (before fine-tuning): {evaluation.base_task_score:.2f}.", ""]
    lines += ["## Gates", ""] + ([f"- FAILED {f}" for f in failures] or ["All gates passed."]) + [""]
    header, body = sweep_rows(evaluation)
    if body:
        lines += ["## Sampling sweep", "", "Task score at each sampling setting.", "",
                  "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in body] + [""]
    lines += ["![quality vs size](quality_vs_size.png)", ""]
    if has_loss:
        lines += ["![training loss](loss_curve.png)", ""]
    if evaluation.rounds:
        lines += arena.markdown(evaluation.rounds)
    (out / "report.md").write_text("\n".join(lines))


def print_summary(evaluation: Evaluation, out: Console, arena_rounds: int | None = 3) -> None:
    """The table, the sweep if any, and the first arena rounds: what a person reads after a run."""
    from rich.table import Table

    from orchestrator.evaluation import arena

    print_table(evaluation.results, out)
    header, body = sweep_rows(evaluation)
    if body:
        table = Table(title="Task score per sampling setting")
        for col in header:
            table.add_column(col, justify="left" if col == "level" else "right")
        for row in body:
            table.add_row(*row)
        out.print(table)
    if evaluation.base_task_score is not None:
        out.print(f"base model task score: {evaluation.base_task_score:.2f}")
    if evaluation.rounds and arena_rounds != 0:
        arena.render(evaluation.rounds, out, arena_rounds)


def print_table(results: list[LevelResult], out: Console) -> None:
    from rich.table import Table

    table = Table(title="Every level, on this machine")
    for col in COLUMNS:
        table.add_column(col, justify="left" if col in ("level", "runtime") else "right")
    for row in rows(results):
        table.add_row(*row)
    out.print(table)
