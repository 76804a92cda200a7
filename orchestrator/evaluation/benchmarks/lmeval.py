"""lm-evaluation-harness tasks by name, asked of each level through its runtime's OpenAI-compatible server.

Each level is served the way a user serves it (llama-cpp-python's server for a GGUF, `mlx_lm.server` for
an MLX directory) on a free loopback port, and lm-eval's `local-chat-completions` model puts the tasks to
it with the level's own chat template. Generation tasks only: a chat endpoint returns no log-likelihoods.
Tasks need their data: the hub's for lm-eval's own tasks, or a local file named in a task YAML under the
recipe's `include_path` (paths in those YAMLs are relative to the recipe). Each task's first metric is
its main score, per document, paired across levels for the deltas.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from orchestrator import cpus
from orchestrator.errors import LatheError
from orchestrator.evaluation.benchmarks.common import LM_EVAL, SuiteScore
from orchestrator.quiet import quiet_stderr
from orchestrator.recipe_benchmarks import LmEval

# mlx_lm.server loads a request's `model` from the hub unless it is this name for the model it was started
# with; llama-cpp-python's server takes it as the served model's alias.
MODEL_NAME = "default_model"
READY_SECONDS = 180  # an MLX server in a venv with torch imports it first: slow on a busy laptop


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(runtime: str, path: str, port: int, n_ctx: int) -> list[str]:
    if runtime == "llama.cpp":
        threads = str(cpus.threads())
        return [sys.executable, "-m", "llama_cpp.server", "--model", path, "--host", "127.0.0.1", "--port", str(port),
                "--n_ctx", str(n_ctx), "--model_alias", MODEL_NAME, "--n_threads", threads,
                "--n_threads_batch", threads]
    return [sys.executable, "-m", "mlx_lm.server", "--model", path, "--host", "127.0.0.1", "--port", str(port)]


def _last_line(log: IO[bytes]) -> str:
    log.seek(0)
    lines = log.read().decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no output"


@contextlib.contextmanager
def serve(runtime: str, path: str, n_ctx: int = 4096) -> Iterator[str]:
    """The level behind its runtime's OpenAI-compatible server; yields the base URL, stops it by pid.
    The server's log goes to an unnamed temporary file, never a pipe: llama-cpp-python's server logs
    timings on every request, and a pipe nobody drains fills at 64 KB (about 120 requests), after which
    the server blocks on its next write and every request waits out its timeout."""
    port = _free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(server_command(runtime, path, port, n_ctx), stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + READY_SECONDS
            while True:
                if proc.poll() is not None:
                    raise LatheError(f"{runtime} server for {Path(path).name} exited {proc.returncode}: "
                                     f"{_last_line(log)}")
                try:
                    with urllib.request.urlopen(f"{url}/v1/models", timeout=5):
                        break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    if time.monotonic() > deadline:
                        raise LatheError(f"{runtime} server for {Path(path).name} not ready after "
                                         f"{READY_SECONDS} s") from None
                    time.sleep(0.5)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _by_filter(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """lm-eval's 'exact_match,strict-match' style keys as {filter: {metric: value}}, in lm-eval's order;
    stderr entries and the alias dropped."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        name, _, filter_name = key.partition(",")
        if filter_name and not name.endswith("_stderr") and isinstance(value, int | float):
            out.setdefault(filter_name, {}).setdefault(name, float(value))
    return out


def scores(results: dict[str, Any]) -> dict[str, SuiteScore]:
    """lm-eval's results (with samples) as one SuiteScore per task, or per task and filter where a task
    has several (gsm8k: strict-match, flexible-extract). lm-eval logs a sample per document and filter:
    each filter's headline is paired with its own samples, never with another filter's."""
    out = {}
    for task, metrics in results["results"].items():
        filters = _by_filter(metrics)
        samples = results.get("samples", {}).get(task, [])
        if not filters or not samples:
            continue  # a group's aggregate row: its tasks have their own
        for filter_name, numbers in filters.items():
            main = next(iter(numbers))
            own = [s for s in samples if s.get("filter", filter_name) == filter_name]
            items = {str(s["doc_id"]): float(s[main]) for s in own if main in s}
            details = {str(s["doc_id"]): {"output": str((s.get("filtered_resps") or [""])[0]),
                                          "target": str(s.get("target", ""))} for s in own}
            name = f"{LM_EVAL}{task}" if len(filters) == 1 else f"{LM_EVAL}{task}[{filter_name}]"
            out[name] = SuiteScore(main=main, metrics=numbers, items=items, details=details)
    return out


def task_manager(config: LmEval, recipe_dir: Path) -> Any:
    """lm-eval's index of tasks (its own and the recipe's); one line naming a task it does not have."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise LatheError("lathe.eval.benchmarks.lm_eval needs lm-eval with its api extra: "
                         "pip install 'lm-eval[api]'") from None
    include = recipe_dir / config.include_path if config.include_path else None
    if include is not None and not include.is_dir():
        raise LatheError(f"lathe.eval.benchmarks.lm_eval.include_path: {include}: no such directory")
    manager = TaskManager(include_path=str(include) if include else None)
    unknown = [t for t in config.tasks if t not in manager.all_tasks]
    if unknown:
        where = f"lm-eval's tasks or {config.include_path}/" if include else "lm-eval's tasks"
        raise LatheError(f"lathe.eval.benchmarks.lm_eval.tasks: {unknown[0]!r} is not among {where}")
    return manager


def evaluate(url: str, config: LmEval, recipe_dir: Path, manager: Any = None) -> dict[str, SuiteScore]:
    """Every task of `config` against the server at `url`."""
    import lm_eval

    manager = manager or task_manager(config, recipe_dir)
    model_args = {"base_url": f"{url}/v1/chat/completions", "model": MODEL_NAME, "tokenizer_backend": None,
                  "max_retries": 1, "max_gen_toks": config.max_tokens, "num_concurrent": 1, "timeout": 600}
    # Task YAMLs name their data files relative to the recipe, which is where a person wrote them. lm-eval
    # and datasets print progress bars, a git error and advice per task: kept off the terminal (the caller
    # shows one line per level), replayed if it fails.
    with contextlib.chdir(recipe_dir), quiet_stderr(switches=False):
        try:
            results = lm_eval.simple_evaluate(
                model="local-chat-completions", model_args=model_args, tasks=list(config.tasks),
                num_fewshot=config.num_fewshot, limit=config.limit, apply_chat_template=True,
                task_manager=manager, log_samples=True, random_seed=0,
                numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
        except (KeyError, ValueError, OSError) as exc:  # a bad task YAML, missing data, the server failing
            raise LatheError(f"lathe.eval.benchmarks.lm_eval: {exc.__class__.__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else 'see lm-eval above'}") from None
    if results is None:
        raise LatheError("lathe.eval.benchmarks.lm_eval: lm-eval returned no results")
    return scores(results)
