"""The job's arguments: what the laptop puts on a submitted run's command line, and what the job reads.

One typed object, so the two sides cannot drift: `lathe submit` builds it and calls
`entrypoint()`, `cluster.job` calls `JobArgs.parse()`. Nothing secret goes here:
credentials are found on the nodes.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

JOB_MODULE = "orchestrator.cluster.job"

# Ray Train's controller polls its workers every 2 s by default (a cluster-scale choice); at 0.5 s a
# finished or failed worker group is noticed sooner: the quickstart's hand-back went from 6-7 s to 3 s.
# Set for the controller's process: the local Ray's environment, a submitted job's env_vars.
CONTROLLER_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}


def _flag(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class JobArgs:
    run_id: str
    recipe: str  # the recipe's file name in the job's working_dir
    store_uri: str
    cluster: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None  # the store's credentials profile on the nodes (a name, never a key)
    pushgateway: str | None = None
    workers: int | None = None
    gpus_per_node: int | None = None
    price_per_gpu_hour: float = 0.0
    export: bool = True  # False: train only (`lathe run --no-export`)
    attempt: int = 1  # > 1: resubmitted after the first attempt was lost
    base_file: str | None = None  # a GGUF base shipped from outside the recipe's directory: its path here

    @property
    def recipe_path(self) -> Path:
        return Path(self.recipe)

    def to_argv(self) -> list[str]:
        argv: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.default is not MISSING and value == f.default:
                continue  # the job's own default: leave it off the command line
            argv += [f"--{f.name.replace('_', '-')}", str(value)]
        return argv

    def entrypoint(self, python: str) -> str:
        return " ".join(shlex.quote(a) for a in [python, "-m", JOB_MODULE, *self.to_argv()])

    @classmethod
    def parse(cls, argv: list[str] | None = None) -> JobArgs:
        parser = argparse.ArgumentParser(prog=JOB_MODULE)
        for f in fields(cls):
            kind = {"int | None": int, "int": int, "float": float, "bool": _flag}.get(str(f.type), str)  # text
            required = f.default is MISSING
            parser.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, required=required,
                                **({} if required else {"default": f.default}))
        return cls(**vars(parser.parse_args(argv)))
