"""The `swarm` console script: one entry point for every command of the project.

Each area registers its own commands (`register(app)`), so this module stays a thin index.
"""
import typer

app = typer.Typer(help="Swarm: a specialist swarm for column type annotation.", no_args_is_help=True)


def _register_all() -> None:
    # Imported lazily inside register() functions so `swarm --help` stays fast.
    from swarm.operator import commands as operator_commands

    operator_commands.register(app)


def main() -> None:
    _register_all()
    app()
