"""Stage: evaluate every level of a run on this machine, in the runtimes users will run.

Each level is evaluated in a fresh process, so its load time and peak memory are
its own. Full precision for the task evals is the f16 (or f32/bf16) GGUF: a
"flip" is an item right there and wrong at the level.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Literal

from orchestrator import manifest as mf
from orchestrator import reference_format
from orchestrator.errors import LatheError, RecipeError
from orchestrator.evaluation import arena as arena_mod
from orchestrator.evaluation import judge as judge_mod
from orchestrator.evaluation import lanes, memorisation, retained
from orchestrator.evaluation.backends import fine_tune_template, scoring_bytes
from orchestrator.evaluation.benchmarks import suites as benchmarks
from orchestrator.evaluation.benchmarks.common import Prompt, SuiteScore
from orchestrator.evaluation.gates import (
    add_base_benchmark_deltas,
    add_benchmark_deltas,
    add_flips,
    add_task_deltas,
    full_precision,
    gate_failures,
    unchecked,
)
from orchestrator.evaluation.results import Evaluation, LevelResult, Target
from orchestrator.levels import fits_gb, memory_need, rank
from orchestrator.recipe import lathe_block_of, read_yaml
from orchestrator.recipe_benchmarks import LmEval
from orchestrator.run import timeline
from orchestrator.run.layout import RECIPE, find_export, run_dir_of

BackendChoice = Literal["llamacpp", "mlx", "all"]


def targets(export_dir: Path, manifest: mf.Manifest, backend: BackendChoice) -> list[Target]:
    out, seen_mlx = [], set()
    for art in manifest.artifacts:
        if art.role != "model" or not (export_dir / art.path).exists():
            continue  # the base is the arena's; absent levels were not pulled
        if art.format == "gguf" and backend in ("llamacpp", "all"):
            out.append(Target(art.level or "", "llama.cpp", str(export_dir / art.path), art.size, art.bits_per_weight))
        elif art.format == "mlx" and backend in ("mlx", "all") and art.level not in seen_mlx:
            # One target per MLX level, however many shards mlx-lm wrote it in (it splits at 5 GB): the
            # level's size and bits per weight are its shards' together.
            seen_mlx.add(art.level)
            shards = [a for a in manifest.by_level(art.level or "") if a.format == "mlx"]
            bpw = None if any(a.bits_per_weight is None for a in shards) else \
                round(sum(a.bits_per_weight or 0.0 for a in shards), 3)
            out.append(Target(art.level or "", "mlx", str((export_dir / art.path).parent),
                              sum(a.size for a in shards), bpw))
    return sorted(out, key=lambda t: (t.runtime != "llama.cpp", rank(t.level), t.level))


def _answer(backend: Any, items: list[Any], sampling: Any) -> dict[str, dict[str, Any]]:
    from orchestrator.evaluation.tasks import score

    answers = {}
    for item in items:
        per_item = sampling.model_copy(update={"max_tokens": item.max_tokens or sampling.max_tokens})
        output = backend.chat(item.messages(), per_item)
        answers[item.id or ""] = {"output": output, "correct": score(item, output)}
    return answers


def _ask(backend: Any, asked: list[dict[str, Any]], sampling: Any) -> dict[str, str]:
    """The benchmarks' prompts, greedy, each with its own length; tools through the chat template, or in
    a system message when the template has no place for them."""
    from orchestrator.evaluation.benchmarks.bfcl import with_tools_in_system

    takes_tools = backend.takes_tools()
    outputs = {}
    for prompt in asked:
        messages, tools = prompt["messages"], prompt["tools"]
        if tools and not takes_tools:
            messages, tools = with_tools_in_system(messages, tools), None
        outputs[prompt["key"]] = backend.chat(messages, sampling.model_copy(update={"max_tokens": prompt["max_tokens"]}),
                                              tools=tools)
    return outputs


def context_for(asked: list[Prompt]) -> int:
    """A context long enough for the longest benchmark prompt and its answer: its characters bound its
    tokens (a byte-level tokenizer gives at most one token per byte) and the template adds little."""
    return max((len(json.dumps([p.messages, p.tools]).encode()) + p.max_tokens + 64 for p in asked), default=0)


def n_ctx_for(reference_context: int, context: int) -> int:
    """The serving context: the recipe's (the level as a user runs it), with room for the speed probe."""
    return max(context + 64, reference_context + 64)


def _load(target: Target, n_ctx: int, threads: int, template: str | None = None) -> tuple[Any, float]:
    """The level's backend and the seconds its load took (the runtime is imported before)."""
    from orchestrator.evaluation.backends import MLX, LlamaCpp

    start = time.perf_counter()
    backend = LlamaCpp(Path(target.path), n_ctx=n_ctx, n_threads=threads, template=template) \
        if target.runtime == "llama.cpp" else MLX(Path(target.path))
    return backend, time.perf_counter() - start


def _evaluate_one(target: Target, ref_dir: str, job_json: str, fingerprint: str, context: int,
                  hf_config: dict[str, Any], full: bool = True, threads: int = 0, timed: bool = True) -> dict[str, Any]:
    """Runs in a lane (see `lanes`). Two phases, each with its own peak memory:

    1. serving, the level as a user runs it (llama.cpp without logits at every position, the recipe's
       context): answer the items, the arena, the held-out questions and the sweep; its peak is the
       level's memory, and (`timed`: when nothing runs beside it) its load time and tokens/s are the
       level's. Then the benchmarks; where their longest prompt needs more context than the recipe's
       (IFBench has 2,000-token prompts), llama.cpp loads the level again at that context for them, and
       that instance's KV cache is not charged to the level;
    2. scoring: log-probs at every position over the vocabulary (perplexity, KL divergence against the
       reference), a memory cost of the measurement and not of the model, reported apart.

    `full=False` (the base model in the arena) only answers and scores perplexity: quality against the
    fine-tune's reference would measure the training, not the quantization.
    """
    from orchestrator.evaluation.quality import check_tokenizer, measure, perplexity, reference_perplexity
    from orchestrator.evaluation.tasks import Item, Sampling

    job = json.loads(job_json)
    items = [Item.model_validate(raw) for raw in job["items"]]
    samplings = [Sampling.model_validate(raw) for raw in job["samplings"]]
    ref = reference_format.load(Path(ref_dir))
    # The runtime's import is not the model's load: done first, it is in neither the load time nor the
    # memory attributed to the level (measured over the baseline taken here).
    import_runtime(target.runtime)
    lanes.reset_peak()
    baseline = lanes.rss_bytes()
    serving = n_ctx_for(int(ref.meta["context"]), context)
    backend, load_seconds = _load(target, serving, threads, job.get("template"))
    answers = _answer(backend, items, samplings[0])
    arena = {arena_mod.prompt_key(n): backend.chat([{"role": "user", "content": p}], samplings[0])
             for n, p in enumerate(job["arena_prompts"])}
    heldout = {item.id or "": backend.chat(item.messages(), samplings[0])
               for item in (Item.model_validate(raw) for raw in job["heldout"])}
    facts = [Item.model_validate(raw) for raw in job["retained"]]
    kept = retained.ask_as_text(backend, facts) if job["retained_as"] == "text" else _answer(backend, facts, samplings[0])
    sweep = [_swept(backend, items, variant, answers) for variant in samplings[1:]] if full else []
    peak = _peak(baseline)
    prompt_tps, gen_tps = backend.speed(speed_prompt(ref)) if timed and full else (0.0, 0.0)
    if target.runtime == "llama.cpp" and job["benchmark_context"] > serving:
        backend.close()
        backend, _ = _load(target, job["benchmark_context"], threads, job.get("template"))
    said = _ask(backend, job["benchmarks"], samplings[0])

    lanes.reset_peak()
    # llama.cpp: the serving instance is closed and the file loaded again, at the serving context (not the
    # benchmarks' longer one, whose KV cache would otherwise be counted in the scorer's memory)
    scorer = backend.scorer(serving)
    domain = perplexity(scorer, job["domain_text"], context) if job["domain_text"] else None
    task_score = (sum(a["correct"] for a in answers.values()) / len(answers)) if answers else None
    if not full:
        return {"answers": answers, "arena": arena, "task_score": task_score, "heldout": heldout,
                "domain_perplexity": domain, "general_perplexity": reference_perplexity(scorer, ref),
                "benchmark_outputs": said, "retained": kept}
    check_tokenizer(scorer, fingerprint, scorer.vocab_size(), f"{target.runtime} {target.level}")
    quality = measure(scorer, ref)
    scoring_peak = _peak(baseline)
    scorer.close()
    need = memory_need(target.size_bytes, hf_config, context)
    return LevelResult(
        level=target.level, runtime=target.runtime, size_bytes=target.size_bytes,
        bits_per_weight=target.bits_per_weight, task_score=task_score,
        quality=quality.as_dict() | ({"domain_perplexity": domain} if domain is not None else {}),
        answers=answers, load_seconds=load_seconds, prompt_tps=prompt_tps, gen_tps=gen_tps,
        peak_rss_bytes=peak, baseline_rss_bytes=baseline, scoring_peak_bytes=scoring_peak,
        memory_need_bytes=need, fits_gb=fits_gb(need), arena=arena, sweep=sweep,
        heldout={k: {"output": v, "reuses": None} for k, v in heldout.items()}, retained=kept,
    ).model_dump() | {"benchmark_outputs": said}


def _peak(baseline: int) -> int:
    """The lane's peak since the last reset, with MLX's own counter as a floor: on Apple Silicon its Metal
    buffers may be missing from resident memory."""
    return max(lanes.peak_rss_bytes(), baseline + lanes.mlx_peak_bytes())


def _swept(backend: Any, items: list[Any], variant: Any, answers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One sampling setting's answers, and what it changed against greedy's."""
    got = _answer(backend, items, variant)
    return {"sampling": variant.model_dump(),
            "task_score": sum(a["correct"] for a in got.values()) / len(got) if got else None,
            "answers": got,
            "flipped": sorted(k for k, a in answers.items() if a["correct"] and not got[k]["correct"]),
            "gained": sorted(k for k, a in answers.items() if not a["correct"] and got[k]["correct"]),
            "changed": sum(got[k]["output"].strip() != a["output"].strip() for k, a in answers.items())}


def import_runtime(runtime: str) -> None:
    import importlib

    for module in ("llama_cpp",) if runtime == "llama.cpp" else ("mlx.core", "mlx_lm"):
        importlib.import_module(module)


def speed_prompt(ref: Any) -> list[int]:
    return ref.windows[0][:64].tolist()


def _time_level(target: Target, n_ctx: int, prompt: list[int]) -> tuple[float, float, float]:
    """Runs in a lane with nothing beside it: (load seconds, prompt tokens/s, generated tokens/s)."""
    import_runtime(target.runtime)
    backend, load_seconds = _load(target, n_ctx, 0)
    return (load_seconds, *backend.speed(prompt))


def base_target(export_dir: Path, manifest: mf.Manifest) -> Target | None:
    art = next((a for a in manifest.artifacts if a.role == "base" and a.format == "gguf"
                and (export_dir / a.path).is_file()), None)
    if art is None:
        return None
    return Target(f"base {art.level}", "llama.cpp", str(export_dir / art.path), art.size, art.bits_per_weight)


def evaluate(
    path: Path,
    backend: BackendChoice = "all",
    sampling_json: str | None = None,
    items_path: Path | None = None,
    progress: Any = None,
    sweep_grid: dict[str, list[float]] | None = None,
    judge_path: Path | None = None,
    base_gguf: Path | None = None,
    lm_eval_tasks: list[str] | None = None,
) -> Evaluation:
    """Evaluate every level (and the base, for the arena); write the report."""
    from orchestrator.evaluation import report
    from orchestrator.evaluation.tasks import Sampling, load_items, sweep

    export_dir = find_export(path)
    run = run_dir_of(export_dir)
    manifest = mf.verify_present(export_dir)
    if run.record_path.is_file():
        run.mark(timeline.EVAL_STARTED)
    block = lathe_block_of(run.path / RECIPE)
    for where, named in block.eval.files():  # a file the recipe names and the run's folder lacks: one line
        if not (run.recipe_dir() / named).exists():
            raise RecipeError(str(run.path / RECIPE), where, f"{named} does not exist (in {run.recipe_dir()})")
    if items_path is None and block.eval.dataset:
        items_path = run.recipe_dir() / block.eval.dataset
    if items_path is not None and not items_path.is_file():
        raise LatheError(f"--items: {items_path} does not exist")
    items = load_items(items_path) if items_path else []
    heldout_items = load_items(run.recipe_dir() / block.eval.heldout) if block.eval.heldout else []
    retained_items = load_items(run.recipe_dir() / block.eval.retained) if block.eval.retained else []
    trained = memorisation.training_answers(run.recipe_dir(), read_yaml(run.path / RECIPE)[1]) if heldout_items else {}
    ref_meta = json.loads((export_dir / "reference" / "reference.json").read_text())
    context = block.eval.context_length or int(ref_meta["context"])
    hf_config = json.loads((export_dir / "hf" / "config.json").read_text())
    default = Sampling.model_validate_json(sampling_json) if sampling_json else Sampling()
    grid = sweep_grid if sweep_grid is not None else {k: list(v) for k, v in block.eval.sweep.items()}
    samplings = sweep(default, grid)
    job = {"items": [i.model_dump(by_alias=True) for i in items], "samplings": [s.model_dump() for s in samplings],
           "arena_prompts": block.eval.arena_prompts, "heldout": [i.model_dump(by_alias=True) for i in heldout_items],
           "retained": [i.model_dump(by_alias=True) for i in retained_items],
           "domain_text": (run.recipe_dir() / block.eval.domain_text).read_text(encoding="utf-8")
           if block.eval.domain_text else None}
    asked = benchmarks.prompts(block.eval.benchmarks, run.recipe_dir())
    job |= {"benchmarks": [p.asked() for p in asked], "benchmark_context": context_for(asked)}
    ref_dir = str(export_dir / "reference")

    chosen = targets(export_dir, manifest, backend)
    base = Target(f"base ({base_gguf.name})", "llama.cpp", str(base_gguf), base_gguf.stat().st_size, None) \
        if base_gguf else base_target(export_dir, manifest)
    job["retained_as"] = retained.asked_as(block.eval.retained_asked_as, base.path if base else None, retained_items,
                                           f"{run.path / RECIPE}: lathe.eval.retained") if retained_items else None
    # Base answers are greedy and at the default sampling only: the arena compares models, not samplers.
    base_job = {**job, "samplings": job["samplings"][:1], "template": fine_tune_template(export_dir / "hf")}
    raws, base_raw = _run_levels(chosen, base, job, base_job, ref_dir, manifest.tokenizer_fingerprint, context,
                                 hf_config, progress, int(ref_meta["context"]))
    results: list[LevelResult] = []
    for raw in raws:
        said = raw.pop("benchmark_outputs")
        result = LevelResult(**raw)
        if asked:
            result.benchmarks = benchmarks.score(asked, said)
        if heldout_items:
            outputs = {k: v["output"] for k, v in result.heldout.items()}
            result.reuse_rate, result.heldout = memorisation.measure(outputs, trained)
        results.append(result)
    lm_eval = block.eval.benchmarks.lm_eval
    if lm_eval_tasks:
        lm_eval = LmEval(tasks=lm_eval_tasks) if lm_eval is None else lm_eval.model_copy(update={"tasks": lm_eval_tasks})
    if lm_eval is not None:
        _lm_eval(lm_eval, chosen, results, run.recipe_dir(), context, progress)
    add_flips(results)
    add_task_deltas(results, block.eval.significance_level)
    add_benchmark_deltas(results, block.eval.significance_level)

    contestants = []
    base_score = base_reuse = None
    base_ppl: dict[str, float | None] = {}
    base_scores: dict[str, SuiteScore] = {}
    base_kept: dict[str, dict[str, Any]] = {}
    if base is not None and base_raw is not None:  # base_raw is there exactly when base is
        raw = base_raw
        base_kept = raw["retained"]
        retained.add_deltas(results, base_kept, block.eval.significance_level)
        base_score, base_ppl = raw["task_score"], {"domain": raw["domain_perplexity"],
                                                   "general": raw["general_perplexity"]}
        base_scores = benchmarks.score(asked, raw["benchmark_outputs"]) if asked else {}
        add_base_benchmark_deltas(results, base_scores, block.eval.significance_level)
        if heldout_items:
            base_reuse = memorisation.measure(raw["heldout"], trained)[0]
        contestants.append(_contestant(base.level, raw["answers"], raw["arena"], raw["heldout"]))
    contestants += [_contestant(r.level, r.answers, r.arena, {k: v["output"] for k, v in r.heldout.items()})
                    for r in results]
    rounds = arena_mod.build_rounds(items + heldout_items, block.eval.arena_prompts, contestants)
    judged = None
    if judge_path is not None:
        if progress:
            progress(f"judging the arena with {judge_path.name}")
        full = full_precision(results)
        judged = judge_mod.grade(rounds, judge_path, full.level if full else None, block.eval.significance_level)

    failures = gate_failures(results, block.eval.gates)
    not_checked = unchecked(results, block.eval.gates)
    evaluation = Evaluation(run.eval_dir, results, failures, rounds, samplings, base_score, base_reuse,
                            {i.id or "": i.prompt for i in heldout_items}, base_ppl, base_scores,
                            calibration=manifest.calibration, merge_check=manifest.merge_check,
                            base_provenance=manifest.base_provenance, unchecked_gates=not_checked,
                            base_retained=base_kept, retained_asked_as=job["retained_as"], judge=judged.as_json() if judged else None,
                            gates=block.eval.gates)
    report.write(evaluation, run, manifest, ref_meta, context)
    if run.record_path.is_file():
        run.mark(timeline.EVAL_DONE)
    return evaluation


def _run_levels(chosen: list[Target], base: Target | None, job: dict[str, Any], base_job: dict[str, Any],
                ref_dir: str, fingerprint: str, context: int, hf_config: dict[str, Any],
                progress: Any, window: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Every level (and the base) across the lanes, longest first (MLX's CPU backend is the slow one);
    then, with more than one lane, each level's load time and speed one at a time."""
    everything = [*chosen, *([base] if base else [])]
    # Each lane's budget: the level served (at the benchmarks' context where that is longer), and the
    # scorer's buffers beside it (backends.scoring_bytes).
    scoring = scoring_bytes(int(hf_config.get("vocab_size", 0)), window)
    longest = max(context, job["benchmark_context"])
    width = lanes.count([memory_need(t.size_bytes, hf_config, longest) + scoring for t in everything])
    order = sorted(range(len(everything)), key=lambda n: (everything[n].runtime != "mlx", -everything[n].size_bytes))
    with lanes.Lanes(width) as pool:
        alone = width == 1  # one lane: each level is timed where it runs, with nothing beside it
        calls = [(_evaluate_one, (everything[n], ref_dir, json.dumps(job if n < len(chosen) else base_job),
                                  fingerprint, context, hf_config, n < len(chosen), pool.threads(), alone))
                 for n in order]
        if progress:
            progress(f"{len(everything)} levels, {width} at a time" if width > 1 else f"{len(everything)} levels")
        began = time.perf_counter()

        def finished(k: int, _: Any) -> None:
            if progress:
                t = everything[order[k]]
                progress(f"{t.runtime} {t.level}: done ({time.perf_counter() - began:.0f} s)")

        done = pool.run_all(calls, finished)
        raws: list[dict[str, Any]] = [{}] * len(everything)
        for k, n in enumerate(order):
            raws[n] = done[k]
        if not alone:
            if progress:
                progress("load time and tokens/s, one level at a time")
            ref = reference_format.load(Path(ref_dir))
            n_ctx, prompt = n_ctx_for(int(ref.meta["context"]), context), speed_prompt(ref)
            for target, raw in zip(chosen, raws, strict=False):
                raw["load_seconds"], raw["prompt_tps"], raw["gen_tps"] = pool.alone(_time_level, target, n_ctx, prompt)
    return raws[:len(chosen)], (raws[len(chosen)] if base else None)


def _lm_eval(config: LmEval, chosen: list[Target], results: list[LevelResult], recipe_dir: Path, context: int,
             progress: Any) -> None:
    """lm-eval's tasks against each level, served by its runtime's OpenAI-compatible server."""
    from orchestrator.evaluation.benchmarks import lmeval

    manager = lmeval.task_manager(config, recipe_dir)  # an unknown task fails here, before any server starts
    for target, result in zip(chosen, results, strict=True):
        if progress:
            progress(f"lm-eval {', '.join(config.tasks)}: {target.runtime} {target.level}")
        with lmeval.serve(target.runtime, target.path, n_ctx=max(context, 2048) + config.max_tokens) as url:
            result.benchmarks |= lmeval.evaluate(url, config, recipe_dir, manager)


def _contestant(name: str, answers: dict[str, dict[str, Any]], arena: dict[str, str],
                heldout: dict[str, str]) -> arena_mod.Contestant:
    texts = {k: a["output"] for k, a in answers.items()} | arena | heldout
    return arena_mod.Contestant(name, texts, {k: bool(a["correct"]) for k, a in answers.items()})
