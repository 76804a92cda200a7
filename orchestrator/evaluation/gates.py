"""What the recipe's gates say of the measured levels, and which answers flipped (pure functions)."""

from __future__ import annotations

from orchestrator.evaluation.benchmarks.common import SuiteScore, gate_name, label, ordered
from orchestrator.evaluation.deltas import ALPHA, Delta, describe, paired_delta, scores
from orchestrator.evaluation.results import LevelResult
from orchestrator.levels import FULL_PRECISION
from orchestrator.recipe import Gate


def full_precision(results: list[LevelResult], runtime: str = "llama.cpp") -> LevelResult | None:
    """A runtime's own full-precision level (llama.cpp's f16; MLX's mlx-f16), if it was evaluated."""
    names = FULL_PRECISION if runtime == "llama.cpp" else tuple(f"mlx-{lvl}" for lvl in FULL_PRECISION)
    return next((r for lvl in names for r in results if r.level == lvl and r.runtime == runtime), None)


def reference_for(results: list[LevelResult], r: LevelResult) -> LevelResult | None:
    """What a level is compared with: its own runtime's full precision, so that a flip or a drop counts
    what quantization changed and not what differs between runtimes (template, sampler, kernels: that is
    the runtime gap, shown apart). Without one, llama.cpp's full precision."""
    return full_precision(results, r.runtime) or full_precision(results)


def add_flips(results: list[LevelResult]) -> None:
    """Mark, per level, the eval items right at its full precision and wrong at that level."""
    for r in results:
        base = reference_for(results, r)
        if base is None:
            continue
        right = {k for k, a in base.answers.items() if a["correct"]}
        r.flipped = sorted(k for k in right if not r.answers.get(k, {}).get("correct", False))
        r.flips = len(r.flipped)


def add_task_deltas(results: list[LevelResult], alpha: float = ALPHA) -> None:
    """Per level, its task score's change against its full precision, paired over the same items."""
    for r in results:
        base = reference_for(results, r)
        found = paired_delta(scores(base.answers), scores(r.answers), alpha=alpha) if base else None
        r.task_delta = found.as_dict() if found else None


def add_benchmark_deltas(results: list[LevelResult], alpha: float = ALPHA) -> None:
    """Per level and benchmark, its main score's change against its full precision, paired over items."""
    for r in results:
        base = reference_for(results, r)
        if base is None:
            continue
        for suite, got in r.benchmarks.items():
            if suite in base.benchmarks:
                found = paired_delta(base.benchmarks[suite].items, got.items, alpha=alpha)
                got.delta = found.as_dict() if found else None


def add_base_benchmark_deltas(results: list[LevelResult], base: dict[str, SuiteScore], alpha: float = ALPHA) -> None:
    """The base's score on each benchmark against the fine-tune's full precision, paired over the same
    items, so that what the fine-tune bought carries the same exact test as any level's drop (the base's
    delta is negative where the fine-tune gained)."""
    full = full_precision(results)
    if full is None:
        return
    for suite, got in base.items():
        if suite in full.benchmarks:
            found = paired_delta(full.benchmarks[suite].items, got.items, alpha=alpha)
            got.delta = found.as_dict() if found else None


def runtime_gap(results: list[LevelResult]) -> dict[str, object] | None:
    """MLX's full precision against llama.cpp's, on the same items: what the runtimes differ by before
    any quantization (chat template, sampler, kernels). None unless both were evaluated."""
    ours, theirs = full_precision(results), full_precision(results, "mlx")
    if ours is None or theirs is None:
        return None
    alpha = float(next((r.task_delta["alpha"] for r in results if r.task_delta and "alpha" in r.task_delta), ALPHA))
    task = paired_delta(scores(ours.answers), scores(theirs.answers), alpha=alpha)
    suites = {suite: d.as_dict() for suite in ordered(set(ours.benchmarks) & set(theirs.benchmarks))
              if (d := paired_delta(ours.benchmarks[suite].items, theirs.benchmarks[suite].items, alpha=alpha))}
    return {"from": f"{ours.level} (llama.cpp)", "to": f"{theirs.level} (mlx)",
            "task": task.as_dict() if task else None, "benchmarks": suites,
            "mean_kld": [ours.quality.get("mean_kld"), theirs.quality.get("mean_kld")]}


def gap_line(gap: dict[str, object] | None) -> str | None:
    """'runtime gap, mlx-f16 (mlx) against f16 (llama.cpp): task +0.00 [...]; BFCL ...'."""
    if not gap:
        return None
    parts = [f"task {describe(d)}" for d in [as_delta(gap["task"])] if d]  # type: ignore[arg-type]
    parts += [f"{label(suite)} {describe(Delta.from_dict(raw))}"
              for suite, raw in gap["benchmarks"].items()]  # type: ignore[union-attr]
    return f"runtime gap, {gap['to']} against {gap['from']}: " + ("; ".join(parts) or "no shared items")


def as_delta(raw: dict[str, float | int | str] | None) -> Delta | None:
    """A delta as measured (report.json keeps it as a mapping)."""
    return Delta.from_dict(raw) if raw else None


def task_delta(r: LevelResult) -> Delta | None:
    return as_delta(r.task_delta)


def significant_drop(r: LevelResult) -> Delta | None:
    """The level's task delta when it is a drop more than chance explains, else None."""
    d = task_delta(r)
    return d if d is not None and d.significant_drop else None


def held_back(r: LevelResult) -> list[str]:
    """Why a level is never recommended whatever the gates say: each significant drop against its full
    precision (the task, or any benchmark's main score). Gates set how much loss a recipe tolerates; a
    drop more than chance explains, with no gate set for it, still is not "passing"."""
    out = [f"{r.level} ({r.runtime}): task score change {describe(d)} is a significant drop"
           for d in [significant_drop(r)] if d]
    for suite in ordered(set(r.benchmarks)):
        d = as_delta(r.benchmarks[suite].delta)
        if d is not None and d.significant_drop:
            out.append(f"{r.level} ({r.runtime}): {label(suite)} {r.benchmarks[suite].main} change {describe(d)} "
                       "is a significant drop")
    return out


DROP_GATES = ("max_task_drop", "max_bfcl_drop", "max_ifeval_drop", "max_ifbench_drop", "max_docqa_drop", "max_lm_eval_drop")


def gate_failures(results: list[LevelResult], gates: dict[str, Gate]) -> list[str]:
    """One message per violated gate: 'q4_k_m (llama.cpp): mean KLD 0.61 > max_mean_kld 0.5'. A gate with
    nothing measured under it (no eval items, no reference, a benchmark not run) fails and says so: a gate
    never passes on nothing. A gated level not evaluated at all is `unchecked`, said apart."""
    failures = []
    for level, gate in gates.items():
        for r in [r for r in results if r.level.lower() == level.lower()]:
            fp = reference_for(results, r)
            fp_score = fp.task_score if fp else None
            items = len(fp.answers) if fp else 0  # the eval set's items, as full precision answered them
            q = r.quality
            checks = [
                ("max_mean_kld", q["mean_kld"], gate.max_mean_kld, "mean KLD"),
                ("max_p99_kld", q["p99_kld"], gate.max_p99_kld, "p99 KLD"),
                ("max_ppl_increase_pct", q["ppl_change_pct"], gate.max_ppl_increase_pct, "perplexity change %"),
                ("min_top1_agreement", q["top1_agreement"], gate.min_top1_agreement, "top-1 agreement"),
                ("max_flips", r.flips if items else None, gate.max_flips, "flips"),
                ("min_task_score_ratio",
                 (r.task_score / fp_score) if (r.task_score is not None and fp_score) else None,
                 gate.min_task_score_ratio, "task score / full precision"),
            ]
            drops = {name: [] for name in DROP_GATES}
            drops["max_task_drop"].append(("task score", task_delta(r) if items else None))
            for suite in ordered(set(r.benchmarks)):
                drops[gate_name(suite)].append((f"{label(suite)} {r.benchmarks[suite].main}",
                                                as_delta(r.benchmarks[suite].delta)))
            for name, measured in drops.items():
                limit = getattr(gate, name)
                if limit is None:
                    continue
                if not measured or any(d is None or d.items == 0 for _, d in measured):
                    failures.append(f"{r.level} ({r.runtime}): {name} {limit:g}: nothing measured to gate "
                                    f"({_missing(name)})")
                for what, drop in measured:
                    if drop is not None and drop.significant_drop and -drop.delta > limit:
                        failures.append(f"{r.level} ({r.runtime}): {what} change {describe(drop)} is a significant "
                                        f"drop of more than {name} {limit:g}")
            for name, value, limit, shown in checks:
                if limit is None:
                    continue
                if value is None:
                    failures.append(f"{r.level} ({r.runtime}): {name} {limit:g}: nothing measured to gate "
                                    f"({_missing(name)})")
                    continue
                broken = value > limit if name.startswith("max") else value < limit
                if broken:
                    op = ">" if name.startswith("max") else "<"
                    failures.append(f"{r.level} ({r.runtime}): {shown} {value:.4g} {op} {name} {limit:g}")
    return failures


def unchecked(results: list[LevelResult], gates: dict[str, Gate]) -> list[str]:
    """Gated levels this evaluation did not measure (not pulled, or another --backend): their gates were
    not checked, which the report says instead of calling them passed. Validation has already refused a
    gate for a level the recipe does not export."""
    measured = {r.level.lower() for r in results}
    return [level for level in gates if level.lower() not in measured]


def _missing(gate: str) -> str:
    """What a gate needs that was not there."""
    if gate in ("max_flips", "min_task_score_ratio", "max_task_drop"):
        return "no eval items: lathe.eval.dataset names none, or full precision was not evaluated"
    if gate.endswith("_drop"):
        suite = gate.removeprefix("max_").removesuffix("_drop")
        return f"no {suite.replace('_', '-')} scores against full precision: lathe.eval.benchmarks runs none"
    return "no reference scores: lathe.export.reference_text is not set"
