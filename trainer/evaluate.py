"""Evaluation of a trained primary on any SOTAB-format directory, and loading of trained primaries."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from swarm.model_server.specialist import Specialist
from swarm.model_server.text import ColumnTokenizer
from swarm.trainer import checkpoint
from swarm.trainer.columns import ColumnExample, build_examples
from swarm.trainer.metrics import Scores, score
from swarm.trainer.primary import PrimaryModel
from swarm.trainer.sotab import DataError, Split, load_dataset
from swarm.trainer.train import ExtraInputs, encode, predict


def load_primary(model_dir: Path) -> tuple[PrimaryModel, dict]:
    state, meta = checkpoint.load_weights(Path(model_dir))
    if meta.get("kind") != "primary":
        raise ValueError(f"{model_dir}: not a primary model (kind={meta.get('kind')!r})")
    model = PrimaryModel.from_meta(meta)
    model.load_state_dict(state)
    return model.eval(), meta


def load_specialists(model_dir: Path, meta: dict) -> list[Specialist]:
    """The frozen specialists a fused primary was trained with (paths in model.json are relative to it)."""
    return [Specialist.load((Path(model_dir) / rel).resolve()) for rel in meta.get("specialist_dirs", [])]


def specialist_inputs(specialists: Sequence[Specialist], texts: Sequence[str]) -> ExtraInputs:
    """Model inputs that run every specialist on the batch's columns and stack their states per layer."""
    def extra(index: Sequence[int]) -> dict:
        batch = [texts[i] for i in index]
        per_agent = [s.extract_states(batch) for s in specialists]
        states = [torch.stack([agent[layer] for agent in per_agent]) for layer in range(len(per_agent[0]))]
        return {"agent_states": states, "agent_ids": list(range(len(specialists)))}

    return extra


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


def evaluate_examples(model: PrimaryModel, examples: Sequence[ColumnExample], labels: Sequence[str],
                      specialists: Sequence[Specialist] = (), majority_label: str | None = None) -> Scores:
    tokenizer = ColumnTokenizer(model.cfg.max_len)
    texts = [e.text for e in examples]
    data = encode(texts, [e.label for e in examples], tokenizer)
    extra = specialist_inputs(specialists, texts) if specialists else None
    pred = predict(model, data, extra).argmax(-1).tolist()
    return score([labels[e.label] for e in examples], [model.labels[i] for i in pred], majority_label)


def evaluate_dir(model_dir: Path, data: Path, split: str | None = None) -> Scores:
    model, meta = load_primary(model_dir)
    target = pick_split(data, split)
    unknown = sorted({ref.label for ref in target.columns if ref.label not in set(model.labels)})
    if unknown:
        raise DataError(f"{data}: labels the model does not know: {unknown}")
    examples = build_examples([target], model.labels)
    return evaluate_examples(model, examples, model.labels, load_specialists(model_dir, meta),
                             meta.get("majority_label"))
