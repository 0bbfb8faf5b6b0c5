"""Training side of the swarm: SOTAB data, the primary model, fusion, training/evaluation loops and the CLI."""
