"""Publishing a run: its companion (model card, deployment recipes, Modelfiles, the evaluated levels).

`deploy_targets` decides from the measured numbers (pure functions), `companion` renders the files
from `templates/` (package data), `publish` checks them for secrets and syncs them to a directory or S3.
May import: `orchestrator.run`, `manifest`, `store`, `levels`, `recipe`, `evaluation.results`/`report`/`tasks`.
"""
