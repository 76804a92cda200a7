"""The report's pictures: quality against size, task score and held-out reuse per level, the loss curve.

PNG files beside report.md, and inlined into report.html, so the page needs nothing but itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.evaluation.results import LevelResult


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_quality_vs_size(results: list[LevelResult], path: Path) -> None:
    plt = _pyplot()
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
    plt = _pyplot()
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


def plot_scores(results: list[LevelResult], base_task: float | None, base_reuse: float | None,
                path: Path) -> bool:
    """Per level (and the base, as the control): task score, and the share of held-out questions answered
    with a training answer verbatim. Where both bars fall is what compression did to the fine-tune."""
    if all(r.task_score is None for r in results):
        return False
    plt = _pyplot()
    names = ["base"] + [r.level for r in results]
    task = [base_task] + [r.task_score for r in results]
    reuse = [base_reuse] + [r.reuse_rate for r in results]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [v or 0.0 for v in task], width=0.4, label="task score (trained answers)")
    if any(v is not None for v in reuse):
        ax.bar([x + 0.2 for x in xs], [v or 0.0 for v in reuse], width=0.4, label="held-out reuse")
    ax.set_xticks(list(xs), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of items")
    ax.set_title("What the fine-tune says, level by level")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
