"""A run's states, in one place: what each means and which are active or terminal.

The laptop's registry, the job's run.json, the Pushgateway's ``lathe_run_state``
series and `lathe watch` all speak this vocabulary (as Ray's ``JobStatus`` does
for jobs); Ray's own job states are mapped onto it in `remote.status`.
"""

from __future__ import annotations

from enum import StrEnum


class RunState(StrEnum):
    SUBMITTING = "SUBMITTING"  # the laptop is handing the job to Ray; not yet known to be accepted
    PENDING = "PENDING"  # accepted, waiting for a run slot or its runtime environment
    RUNNING = "RUNNING"  # training
    TRAINED = "TRAINED"  # trained with export off; SUCCEEDED follows once the driver has recorded it
    EXPORTING = "EXPORTING"  # merging, converting, quantizing
    UPLOADING = "UPLOADING"  # export done, artifacts going to the store
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    STOPPED = "STOPPED"  # stopped by a user

    def is_terminal(self) -> bool:
        return self in TERMINAL

    def is_active(self) -> bool:
        return self in ACTIVE


TERMINAL = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.STOPPED})
ACTIVE = frozenset(RunState) - TERMINAL
# The states the driver reports to Prometheus (one ``lathe_run_state`` series each).
PUSHED = (RunState.RUNNING, RunState.EXPORTING, RunState.UPLOADING, RunState.SUCCEEDED, RunState.FAILED)


def is_terminal(state: str) -> bool:
    """For a state read from a file or a database: anything not a known active state ends a wait."""
    return state not in {s.value for s in ACTIVE}
