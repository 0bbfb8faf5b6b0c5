"""Evaluation of a trained primary on any SOTAB-format directory, and loading of trained primaries."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import closing, nullcontext
from pathlib import Path

from swarm.model_server.choices import DEVICE_AUTO
from swarm.model_server.model.column_encoder import ColumnEncoder
from swarm.model_server.model.devices import resolve_device
from swarm.model_server.model.manifest import PrimaryManifest
from swarm.model_server.model.primary import PrimaryModel
from swarm.model_server.model.tables import DataError
from swarm.trainer.data.columns import ColumnExample, build_examples
from swarm.trainer.data.sotab import Split, load_dataset
from swarm.trainer.training.metrics import Scores, score
from swarm.trainer.training.state_sources import (
    LocalSpecialists,
    RemoteSpecialists,
    StateSource,
    cache_states,
    cached_inputs,
)
from swarm.trainer.training.train import encode, predict


def specialist_source(model_dir: Path, manifest: PrimaryManifest, endpoints: Mapping[str, str] | None = None,
                      device: str = DEVICE_AUTO) -> StateSource | None:
    """The specialists a fused primary was trained with: their directories (paths in model.json are relative to
    it) or, for a primary trained against remote specialists, their servers."""
    names = manifest.specialists
    if not names or not manifest.fusion_mode:
        return None
    if manifest.specialist_dirs:
        return LocalSpecialists.from_dirs(manifest.resolve_specialist_dirs(model_dir), device)
    if endpoints and all(name in endpoints for name in names):
        return RemoteSpecialists({name: endpoints[name] for name in names})
    raise ValueError(f"{model_dir}: this primary fuses the states of {names}; name their servers with "
                     "--specialist NAME=HOST:PORT (or SWARM_SPECIALIST_ENDPOINTS)")


def pick_split(data: Path, split: str | None) -> Split:
    splits = load_dataset(Path(data))
    if split is not None:
        if split not in splits:
            raise DataError(f"{data}: no split {split!r}; found {sorted(splits)}")
        return splits[split]
    if len(splits) == 1:
        return next(iter(splits.values()))
    if "validation" in splits:
        return splits["validation"]
    raise DataError(f"{data}: several splits {sorted(splits)}; choose one with --split")


def evaluate_examples(model: PrimaryModel, examples: Sequence[ColumnExample], source: StateSource | None = None,
                      majority_label: str | None = None) -> Scores:
    texts = [e.text for e in examples]
    data = encode(texts, [e.label for e in examples], ColumnEncoder(model.cfg.max_len))
    caches = [cache_states(source, name, texts) for name in model.specialists] if source is not None else []
    pred = predict(model, data, cached_inputs(caches) if caches else None).argmax(-1).tolist()
    return score([model.labels[e.label] for e in examples], [model.labels[i] for i in pred], majority_label)


def evaluate_dir(model_dir: Path, data: Path, split: str | None = None,
                 endpoints: Mapping[str, str] | None = None, device: str = DEVICE_AUTO) -> Scores:
    model, manifest = PrimaryModel.load(model_dir)
    model.to(resolve_device(device))
    _, examples = labelled_columns(model, data, split)
    source = specialist_source(model_dir, manifest, endpoints, device)
    with closing(source) if source is not None else nullcontext():
        return evaluate_examples(model, examples, source, manifest.majority_label)


def labelled_columns(model: PrimaryModel, data: Path, split: str | None) -> tuple[Split, list[ColumnExample]]:
    """The split of `data` to score or learn from and its labelled column examples; DataError when it carries a
    label the model does not know."""
    target = pick_split(data, split)
    known = set(model.labels)
    unknown = sorted({ref.label for ref in target.columns if ref.label is not None and ref.label not in known})
    if unknown:
        raise DataError(f"{data}: labels the model does not know: {unknown}")
    return target, build_examples([target], model.labels)
