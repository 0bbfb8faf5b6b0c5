"""The model library: the recurrent-state backbone (`backbone`, `delta_rule`), the primary model and specialists
(`primary`, `specialist`, `readout`, `weights`), state fusion (`fusion/`), knowledge sources (`knowledge/`), how tables
and columns become tokens (`tables`, `text`, `cell_vectors`, `column_features`, `column_encoder`), devices and dtypes
(`devices`), resident-memory accounting (`resident_bytes`) and the orchestrator policy (`orchestrator`, with its
per-table reductions in `segments`).

May import: the contract (`swarm.model_server.choices`), its own modules, torch and third-party packages. Never
`swarm.model_server.serving`, `swarm.trainer`, `swarm.operator` or `swarm.client` (tests/foundation/test_layering.py).
Training lives in swarm.trainer, serving in swarm.model_server.serving; both import this package.
"""
