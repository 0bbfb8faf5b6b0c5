"""What a model directory's JSON names, typed: the one read and the one write of each file.

- A primary's directory: `model.json` (PrimaryManifest) beside `model.safetensors`: the model's own config
  (PrimaryModel.meta()) and what training recorded beside it (majority label, columns, honest fusion, agent
  dropout, release fingerprint) and `specialist_dirs`: where its specialists live, relative to the model directory.
- A specialist's directory: `specialist.json` (SpecialistManifest) beside `model.safetensors`.

On disk the files are what they always were: the same names, keys and layout (JSON, indent 2); a writer writes only
the keys it was given (nothing defaulted is added), in the order declared here. Keys this code does not know (older
or newer files, experiment notes) are accepted, kept and written back unchanged.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

PRIMARY_MANIFEST = "model.json"
SPECIALIST_MANIFEST = "specialist.json"
PRIMARY_KIND = "primary"


def _write(path: Path, fields: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(fields, indent=2), encoding="utf-8")


class _Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    def to_dict(self) -> dict[str, Any]:
        """The keys as written to disk: those set (given or read), declared ones first, then unknown ones."""
        return self.model_dump(mode="json", exclude_unset=True)


class PrimaryManifest(_Manifest):
    """`model.json` of a primary's directory."""

    # the model's own config (PrimaryModel.meta())
    kind: str = PRIMARY_KIND
    config: str
    labels: list[str]
    fusion_mode: str | None = None
    specialists: list[str] = []
    knowledge: list[str] = []
    # what training recorded beside it
    majority_label: str | None = None
    train_columns: int | None = None
    honest_fusion: bool = False
    fusion_columns: int | None = None
    agent_dropout: bool = False
    release: str | None = None  # the release recipe's fingerprint (swarm release)
    specialist_dirs: list[str] = []  # the specialists' directories, relative to the model directory

    @classmethod
    def of(cls, model_meta: Mapping[str, Any], model_dir: Path, specialist_dirs: Sequence[Path] = (),
           **fields: Any) -> PrimaryManifest:
        """The manifest of a primary to be saved in `model_dir`: its config (PrimaryModel.meta()), `fields`, and
        `specialist_dirs` (any paths; stored relative to `model_dir`)."""
        return cls(**model_meta, **fields,
                   specialist_dirs=[os.path.relpath(d, model_dir) for d in specialist_dirs])

    @classmethod
    def load(cls, model_dir: Path) -> PrimaryManifest:
        """FileNotFoundError without a model.json, ValueError when it is not a primary's."""
        path = Path(model_dir) / PRIMARY_MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{model_dir}: not a model directory (no {PRIMARY_MANIFEST})")
        raw = json.loads(path.read_text(encoding="utf-8"))
        if raw.get("kind") != PRIMARY_KIND:
            raise ValueError(f"{model_dir}: not a primary model (kind={raw.get('kind')!r})")
        return cls.model_validate(raw)

    def save(self, model_dir: Path) -> None:
        _write(Path(model_dir) / PRIMARY_MANIFEST, self.to_dict())

    def resolve_specialist_dirs(self, model_dir: Path) -> list[Path]:
        """The specialist directories this primary names, resolved against its directory `model_dir`."""
        return [(Path(model_dir) / rel).resolve() for rel in self.specialist_dirs]


class SpecialistManifest(_Manifest):
    """`specialist.json` of a specialist's directory."""

    name: str
    config: str
    labels: list[str]  # its domain's labels (without OTHER)
    knowledge: list[str] = []
    trained_tables: list[str] = []  # the tables it was fine-tuned on (empty when saved before it recorded them)

    @staticmethod
    def is_in(directory: Path) -> bool:
        """Whether `directory` is a specialist's directory (holds a specialist.json)."""
        return (Path(directory) / SPECIALIST_MANIFEST).is_file()

    @classmethod
    def load(cls, directory: Path) -> SpecialistManifest:
        """FileNotFoundError without a specialist.json."""
        path = Path(directory) / SPECIALIST_MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{directory} is not a specialist directory (no {SPECIALIST_MANIFEST})")
        return cls.model_validate_json(path.read_text(encoding="utf-8"))

    def save(self, directory: Path) -> None:
        _write(Path(directory) / SPECIALIST_MANIFEST, self.to_dict())
