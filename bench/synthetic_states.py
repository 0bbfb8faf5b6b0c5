"""Benchmark-only specialist: random states of a config's geometry served by the real specialist server, no model
run (so the base-size wire can be measured on a CPU). Describe says untrained, and there is no state decoder.

`python -m swarm.bench.synthetic_states --port 0 --ready-file F [--config base --dtype bfloat16 --chunk-kb N ...]`
"""
from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from swarm.model_server.model.backbone import BackboneConfig, get_config
from swarm.model_server.model.devices import DTYPES


@dataclass
class SyntheticStates:
    """Random states of a config's geometry, the same per batch size (cached): what the server streams."""

    name: str
    config_name: str = "base"
    dtype: torch.dtype = torch.bfloat16
    # The model config, under the name a Specialist gives it: the server reads `config` for the clip and the
    # cost estimate (a config name there broke every request).
    config: BackboneConfig = field(init=False)

    def __post_init__(self) -> None:
        self.config = get_config(self.config_name)
        self._cache: dict[int, list[Tensor]] = {}

    def extract_states(self, columns: Sequence[str]) -> list[Tensor]:
        batch = len(columns)
        if batch not in self._cache:
            gen = torch.Generator().manual_seed(batch)
            shape = (batch, self.config.n_heads, self.config.head_k, self.config.head_v)
            self._cache[batch] = [
                torch.randn(shape, generator=gen).to(self.dtype) for _ in range(self.config.n_layers)
            ]
        return self._cache[batch]


def main(argv: Sequence[str] | None = None) -> None:
    from swarm.model_server.serving.grpc_runtime import MiB
    from swarm.model_server.serving.specialist_server import ServerOptions, build_specialist_server

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--specialist", default="temporal")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--config", default="base")
    p.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    p.add_argument("--chunk-kb", type=int, default=ServerOptions.chunk_bytes >> 10)
    p.add_argument("--max-message-mb", type=float, default=ServerOptions.max_message_bytes / MiB)
    p.add_argument("--ready-file", type=Path)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.warning("BENCHMARK MODE: specialist %r serves synthetic random %s states (no model run)",
                    a.specialist, a.config)
    options = ServerOptions(max_message_bytes=int(a.max_message_mb * MiB), chunk_bytes=a.chunk_kb << 10)
    source = SyntheticStates(a.specialist, a.config, DTYPES[a.dtype])
    server = build_specialist_server(source, "127.0.0.1", a.port, options, config=a.config, untrained=True)
    server.start()
    server.serve_until_signalled(1.0, a.ready_file)


if __name__ == "__main__":
    main()
