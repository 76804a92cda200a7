"""A run's own data, owned here and nowhere else: its layout and record (`layout`), its states
(`state`), the job's arguments (`job_args`) and its view in the store (`stored`).

May import: the standard library, pydantic, and `orchestrator.store`/`errors` (only `stored` does).
Everything else in Lathe imports from here.
"""

from orchestrator.run.layout import RunDir, RunRecord, new_run_id, now
from orchestrator.run.state import RunState

__all__ = ["RunDir", "RunRecord", "RunState", "new_run_id", "now"]
