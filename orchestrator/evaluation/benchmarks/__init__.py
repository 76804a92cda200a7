"""The benchmarks a model is judged by, asked of every level: BFCL, IFEval, document QA with citations.

Each suite module has `prompts(config, recipe_dir)` (what to ask, as chat messages, with tools where
the suite has them) and `score(prompts, outputs)` (a `SuiteScore`). Asking happens in the level's own
evaluation process, through its runtime's chat template; scoring happens afterwards in the laptop
process, with the benchmark's own checker (bfcl-eval's AST checker, lm-eval's IFEval checkers), so an
evaluation process never imports a checker's dependencies. `common` holds the
shared types, `suites` runs every enabled suite. May import: `orchestrator.recipe`,
`orchestrator.errors`, `orchestrator.evaluation.deltas`.
"""
