"""Command-line options derived from config classes, so that each default is written once: in the config.

A command names the config class (a pydantic model) and the fields it exposes; `config_options` puts one Typer
option per field into the command's signature, taking from the field its name (`steps` -> `--steps`), its type,
its default, its help (the field's `description`) and its bounds (`ge`/`le` -> the option's min/max; `gt`/`lt`
are checked when the config is built). The command receives either the built config or, when it still has to add
what the command line does not give directly (a resolved device, parsed endpoints), a `ConfigArgs` that builds it.
Where the command line differs from the field (another flag name, a choice type for a plain `str`, an environment
variable, a default for a field the config requires), a `Flag` says so, in the decorator or in the field's
`Annotated` metadata.

This module owns that derivation only; the configs stay in the library, which never imports the command line.
"""
from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar, get_origin

import annotated_types
import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from swarm.trainer.commands.cli_options import DEFAULT_DATA, fail

C = TypeVar("C", bound=BaseModel)
Command = Callable[..., None]

_REQUIRED: Any = ...  # Typer's marker of a required option


@dataclass(frozen=True)
class Flag:
    """How a config field appears on the command line where that differs from the field itself."""

    name: str | None = None  # e.g. "--spawn-budget"; a bool named without "/no-" is a switch that can only be set
    type: Any = None  # the option's type when it is not the field's (an Enum of the choices of a `str` field)
    envvar: str | None = None
    hidden: bool = False
    default: Any = _REQUIRED  # only for a field the config requires: the command line's default for it


# The configs require their dataset; the command line defaults to the bundled one.
DATA_FLAG = Flag(default=DEFAULT_DATA)


def _flag(field: FieldInfo, given: Flag | None) -> Flag:
    if given is not None:
        return given
    return next((m for m in field.metadata if isinstance(m, Flag)), Flag())


def _parameter_name(field_name: str, flag: Flag) -> str:
    if flag.name is None:
        return field_name
    return flag.name.split("/")[0].lstrip("-").replace("-", "_")


def _option_text(field_name: str, flag: Flag) -> str:
    """The flag as a user types it: `--spawn-budget` for ParlConfig.budget."""
    return flag.name.split("/")[0] if flag.name else "--" + field_name.replace("_", "-")


def field_default(config: type[BaseModel], name: str) -> Any:
    """The default of a config field (a fresh copy for a mutable one)."""
    return config.model_fields[name].get_default(call_default_factory=True)


def _option(config: type[BaseModel], name: str, flag: Flag, help_prefix: str) -> tuple[Any, Any]:
    """The (annotation, typer.Option) of one field."""
    field = config.model_fields[name]
    if field.is_required():
        default = flag.default
    elif flag.default is not _REQUIRED:
        raise TypeError(f"{config.__name__}.{name} has a default ({field.default!r}); the command line may not "
                        "give it another")
    else:
        default = field_default(config, name)
    bounds: dict[str, Any] = {}
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Ge):
            bounds["min"] = rule.ge
        elif isinstance(rule, annotated_types.Le):
            bounds["max"] = rule.le
    help_text = field.description
    if help_text and help_prefix:  # "parl: " + "Policy-gradient iterations." -> "parl: policy-gradient iterations."
        help_text = help_prefix + help_text[0].lower() + help_text[1:]
    decls = (flag.name,) if flag.name else ()
    option = typer.Option(default, *decls, help=help_text, envvar=flag.envvar, hidden=flag.hidden, **bounds)
    return flag.type or field.annotation, option


def field_option(config: type[BaseModel], name: str, flag: Flag | None = None) -> Any:
    """One field's typer.Option, for a command that takes it as a plain parameter (the config's default and help)."""
    return _option(config, name, _flag(config.model_fields[name], flag), "")[1]


@dataclass(frozen=True)
class DerivedOption:
    """One option a command takes from a config field."""

    config: type[BaseModel]
    field: str
    parameter: str  # the command's parameter (and Typer's name of the option)


_DERIVED = "config_options"  # the attribute of a decorated command listing its DerivedOptions


def derived_options(command: Callable[..., Any]) -> list[DerivedOption]:
    """The options `config_options` derived for this command, from every config class it stacks."""
    return list(getattr(command, _DERIVED, []))


class ConfigArgs(Generic[C]):
    """What the command line gave for some fields of a config class; `build` adds the rest and validates."""

    def __init__(self, config: type[C], values: dict[str, Any], options: Mapping[str, str]) -> None:
        self.config = config
        self.values = values
        self._options = options  # field -> flag, to name the flag in an error

    def build(self, **more: Any) -> C:
        """The config from the options and `more` (which wins); an invalid value is the CLI's error (exit 2)."""
        try:
            return self.config.model_validate(self.values | more)
        except ValidationError as exc:
            fail("; ".join(self._message(error) for error in exc.errors()))

    def _message(self, error: Any) -> str:
        field = str(error["loc"][0]) if error["loc"] else ""
        where = self._options.get(field, field)
        return f"{where}: {error['msg']}" if where else str(error["msg"])


def _given(config: type[BaseModel], name: str, value: Any) -> Any:
    """The field's value from the option's: an Enum choice as its value; a repeatable option given no value as
    the field's default (the command line cannot tell "not given" from "none")."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list | tuple) and not value:
        return field_default(config, name)
    return value


def config_options(into: str, config: type[C], fields: Sequence[str] | None = None, *,
                   flags: Mapping[str, Flag] | None = None, help_prefix: str = "") -> Callable[[Command], Command]:
    """Replace the command's parameter `into` by one option per field of `config` (`fields`, default all, in that
    order); the command then receives in `into` the config built from them, or, when `into` is annotated
    `ConfigArgs[config]`, the values to build it from. Decorators stack (one per config class); option names
    must not collide."""
    names = list(config.model_fields) if fields is None else list(fields)
    given_flags = dict(flags or {})
    unknown = set(names) - set(config.model_fields)
    if unknown:
        raise TypeError(f"{config.__name__} has no field {', '.join(sorted(unknown))}")
    if set(given_flags) - set(names):
        raise TypeError(f"flags for fields not exposed: {', '.join(sorted(set(given_flags) - set(names)))}")
    field_flags = {n: _flag(config.model_fields[n], given_flags.get(n)) for n in names}
    parameters = {n: _parameter_name(n, field_flags[n]) for n in names}
    texts = {n: _option_text(n, field_flags[n]) for n in names}

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        if into not in signature.parameters:
            raise TypeError(f"{command.__name__} has no parameter {into!r} for the {config.__name__} options")
        annotation = signature.parameters[into].annotation
        partial = get_origin(annotation) is ConfigArgs
        if not partial and not (isinstance(annotation, type) and issubclass(config, annotation)):
            raise TypeError(f"{command.__name__}({into}): annotate it {config.__name__} or ConfigArgs[...]")
        own: list[inspect.Parameter] = []
        for name in names:
            kind, option = _option(config, name, field_flags[name], help_prefix)
            own.append(inspect.Parameter(parameters[name], inspect.Parameter.KEYWORD_ONLY, default=option,
                                         annotation=kind))
        merged: list[inspect.Parameter] = []
        for parameter in signature.parameters.values():
            merged.extend(own if parameter.name == into else [parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY)])
        clash = {p.name for p in merged if [q.name for q in merged].count(p.name) > 1}
        if clash:
            raise TypeError(f"{command.__name__}: options {', '.join(sorted(clash))} come twice")

        @functools.wraps(command)
        def run(**kwargs: Any) -> None:
            values = {n: _given(config, n, kwargs.pop(parameters[n])) for n in names}
            args = ConfigArgs(config, values, texts)
            kwargs[into] = args if partial else args.build()
            command(**kwargs)

        # Typer reads the options from the signature and the types from the annotations: both the new ones.
        run.__signature__ = signature.replace(parameters=merged)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in merged} | {"return": None}
        run.__dict__[_DERIVED] = derived_options(command) + [DerivedOption(config, n, parameters[n]) for n in names]
        return run

    return decorate
