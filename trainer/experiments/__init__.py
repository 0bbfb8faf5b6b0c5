"""The experiments behind reports/ (fusion, accuracy, orchestrator, with their deep-transfer and specialist-help
measurements) and `swarm demo`, the main job end to end. `runner` is the cross-validation runner they share; each
report's writer (`<experiment>_report`) reads only the experiment's result."""
