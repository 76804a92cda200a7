"""Evaluating every level of a run on this machine, in the runtimes its users will run.

`backends` (llama.cpp, MLX), `quality` (KLD, perplexity, top-1 against the reference), `tasks`
(eval items and their scorers), `arena` (side-by-side answers, the judge), `gates`, `evaluate`
(one fresh process per level), `results` (the types and report.json's model) and `report`
(table, plots, report.md). `results` imports nothing of its siblings, so evaluate and report
never import each other. May import: `orchestrator.run`, `manifest`, `levels`, `recipe`,
`reference_format`. Evaluation processes must not import torch (it costs seconds and a GB).
"""
