"""The `swarm` command line: the entry point (`cli.py`), shared options, the training and serving command groups,
and annotating SOTAB splits through the gRPC API (`swarm annotate`, `swarm demo`)."""
