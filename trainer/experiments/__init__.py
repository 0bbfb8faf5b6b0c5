"""The experiments behind reports/ (fusion, accuracy, orchestrator, with their deep-transfer and specialist-help
measurements) and `swarm demo`, the main job end to end."""
