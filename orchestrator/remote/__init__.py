"""Runs on a cluster, seen from the laptop: `submit` (ship a recipe as a Ray job), `status` (Ray's
state and the store's record reconciled; resubmission; stop, logs, follow), `connect` (the Ray Jobs
API, through an SSH tunnel if need be), `pull` (artifacts back, resumable and verified), `watch`
(a live view) and `run` (`lathe run --cluster`: all of them in order).

May import: `orchestrator.run`, `registry`, `profiles`, `store`, `manifest`, `recipe`, `validate`.
Never `cluster` (that is the node's side) nor `evaluation`/`publish`.
"""
