"""The `swarm` console script: one entry point for every command of the project.

Each area registers its own commands (`register(app)`), so this module stays a thin index. The commands' work is
imported inside them, but their options come from config classes whose modules import torch, so registering them
(and `swarm --help`) takes about 2.5 s, as it did before the options were derived.
"""
import importlib
import os

import typer

app = typer.Typer(help="Swarm: a specialist swarm for column type annotation (SOTAB v2).", no_args_is_help=True,
                  pretty_exceptions_enable=False)

COMMAND_MODULES = (
    "swarm.trainer.commands.train_commands",
    "swarm.trainer.commands.release_commands",
    "swarm.trainer.commands.report_commands",
    "swarm.trainer.commands.serving_commands",
    "swarm.trainer.commands.bench",
    "swarm.operator.commands",
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


def main() -> None:
    # Importing torch._dynamo (transformers does, for MiniLM) creates torch's compile cache under $TMPDIR: keep it
    # with the swarm's other caches ($SWARM_CACHE_DIR, default ~/.cache/swarm) rather than in the temp folder.
    from swarm.model_server.choices import cache_root

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_root() / "torchinductor"))
    _register_all()
    app()


if __name__ == "__main__":
    main()
