"""The `swarm` command line: the entry point (`cli.py`) and one module per group of commands, each registering its
own (train, release, report, serving, bench commands); shared options in `cli_options.py`, options derived from the
config classes in `config_options.py`; annotating SOTAB splits through the gRPC API in `annotation_run.py`."""
