"""Admission control for the gRPC servers: a request runs only once the memory it will cost fits a budget.

Every table (annotation server) and every ColumnsRequest (specialist server) is priced before any model runs:
an upper estimate of the bytes it will hold while it is served (`columns x tokens x states`: the activations of
one forward pass over its columns, the specialist states received or produced, the copies made of them) and of
its compute (token passes: columns x tokens x models that read them). The MiniLM encoding of a table's never-seen
cells is priced too (`encoding_cost`: the largest encoder batch's activations and every text's tokens) and admitted
on its own before the table is routed (annotation server), or within the request's price (specialist server, for
the cells no vectors were sent for); cells already cached cost a lookup. Then

- a request over the per-request cap (bytes or token passes) is refused at once with RESOURCE_EXHAUSTED, saying
  how many columns per request would fit (retry hint: do not retry unchanged);
- otherwise it waits, first come first served, until its bytes fit the server's global budget next to the requests
  already running and a compute slot is free; the wait is bounded (by the server's longest queue wait and by the
  call's own deadline), and so is the number of requests waiting. A request that cannot be admitted in time gets
  RESOURCE_EXHAUSTED with a retry hint (`retry_after_ms`; the message shapes are grpc_runtime's `busy` and
  `too_large`, shared by every RESOURCE_EXHAUSTED the servers send); one whose deadline passes gets
  DEADLINE_EXCEEDED; one whose client goes away stops waiting.
- When a large request finishes, the freed heap is handed back to the OS (glibc `malloc_trim`), so the resident
  set returns towards the idle level instead of staying at its high-water mark.

The estimates are upper bounds calibrated against measured resident-set peaks of real server processes (this
repository's 2-core CPU machine, untrained tiny and small models, 64 to 1,024 columns x 20 rows; per request, the
peak RSS increase over the idle server): the analytic activation estimate (resident_bytes) came out 1.25-1.6x
below the measured peaks (allocator slack, the fused primary's extra tensors), so it is scaled by
ACTIVATION_SAFETY and every request gets REQUEST_OVERHEAD on top. Measured (estimate) on the annotation server with
2 specialists: tiny, 64 columns 82 MiB (146), 1,024 columns 1,046 MiB (1,378); small, 64 columns 416 MiB (429),
256 columns 1,382 MiB (1,524). On a specialist (64-column batches): tiny, 1,024 columns 100 MiB (173); small,
64 columns 281 MiB (365), 256 columns 407 MiB (461).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from swarm.model_server.model.backbone import BackboneConfig
from swarm.model_server.model.resident_bytes import inference_activation_bytes
from swarm.model_server.serving.grpc_runtime import DEFAULT_RETRY_AFTER_MS, Refused

T = TypeVar("T")

log = logging.getLogger(__name__)

MiB = 1 << 20
GiB = 1 << 30

# Requests whose estimate (beyond REQUEST_OVERHEAD) is at least this large hand their freed memory back to the OS
# when they finish.
TRIM_AFTER_BYTES = 32 * MiB
# Calibration (see the module doc): analytic activations x ACTIVATION_SAFETY, plus REQUEST_OVERHEAD per request.
ACTIVATION_SAFETY = 1.6
REQUEST_OVERHEAD = 64 * MiB


class AdmissionRejected(Refused):
    """A request refused (or given up on) by admission: the status code, a message that says what to do and, for
    RESOURCE_EXHAUSTED, the retry hint."""


def machine_memory_bytes() -> int:
    """Memory this process may use: physical memory, or the cgroup's limit when that is lower (a pod's limit)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            raw = open(path, encoding="ascii").read().strip()  # noqa: SIM115
        except OSError:
            continue
        if raw.isdigit() and 0 < int(raw) < total:
            total = int(raw)
    return total


_libc_lock = threading.Lock()
_malloc_trim: Callable[[int], int] | None = None
_trim_resolved = False


def release_freed_memory() -> bool:
    """Return free heap pages of every malloc arena to the OS (glibc malloc_trim(0)); False where unavailable."""
    global _malloc_trim, _trim_resolved
    with _libc_lock:
        if not _trim_resolved:
            _trim_resolved = True
            name = ctypes.util.find_library("c")
            try:
                _malloc_trim = ctypes.CDLL(name).malloc_trim if name else None
            except (OSError, AttributeError):
                _malloc_trim = None
        trim = _malloc_trim
    if trim is None:
        return False
    trim(0)
    return True


class ComputeThreads:
    """A fixed set of threads that run the models, whatever gRPC worker thread serves the call.

    Each thread that runs torch on the CPU gets an OpenMP team and math-library buffers of its own, which stay
    resident as long as the thread lives: measured here, ~25-60 MiB per new calling thread (tiny model,
    192 columns), not returned by malloc_trim. Running every forward pass on the same few threads bounds that
    memory (and keeps it warm) instead of letting it grow with the gRPC worker pool."""

    def __init__(self, threads: int, name: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix=name)

    def run(self, fn: Callable[..., T], *args: object) -> T:
        return self._pool.submit(fn, *args).result()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# ---------------------------------------------------------------------------------------------------------------
# Estimates


def state_bytes_per_column(cfg: BackboneConfig, itemsize: int = 4) -> int:
    """Bytes of one column's per-layer (H, K, V) states."""
    return cfg.n_layers * cfg.n_heads * cfg.head_k * cfg.head_v * itemsize


def token_bound(texts: Sequence[str], max_len: int) -> int:
    """Padded batch width of the texts, bounded without tokenizing: WordPiece gives at most one token per
    character, plus [CLS] and [SEP], and the tokenizer truncates at `max_len`."""
    longest = max((len(t) for t in texts), default=0)
    return max(1, min(max_len, longest + 2))


def forward_bytes(cfg: BackboneConfig, columns: int, tokens: int) -> int:
    """One inference forward pass over `columns` texts padded to `tokens` (float32 activations)."""
    if columns <= 0:
        return 0
    import torch

    return inference_activation_bytes(cfg, columns, tokens, torch.float32)


@dataclass(frozen=True)
class Cost:
    """What one request will hold (bytes) and compute (token passes), and the shape it was priced from."""

    bytes: int
    token_passes: int
    columns: int
    tokens: int
    models: int  # models that read the columns (primary + specialists, or 1 on a specialist)

    def describe(self) -> str:
        return (
            f"~{self.bytes / MiB:,.0f} MiB and {self.token_passes:,} token passes "
            f"({self.columns} columns x {self.tokens} tokens x {self.models} models)"
        )


def annotation_cost(
    primary: BackboneConfig,
    texts: Sequence[str],
    specialist_columns: int,
    state_bytes: int,
    request_bytes: int = 0,
) -> Cost:
    """A table on the annotation server: the primary's forward pass over every column, the specialist states
    received for `specialist_columns` (column, specialist) pairs three times over (the received messages, the
    per-group stack the primary reads, the fused copy) and the request itself (parsed proto, Python strings)."""
    columns = len(texts)
    tokens = token_bound(texts, primary.max_len)
    models = 1 + (specialist_columns + columns - 1) // max(1, columns)
    total = (
        int(ACTIVATION_SAFETY * forward_bytes(primary, columns, tokens))
        + 3 * specialist_columns * state_bytes
        + 4 * request_bytes
        + REQUEST_OVERHEAD
    )
    return Cost(total, columns * tokens * models, columns, tokens, models)


def specialist_cost(cfg: BackboneConfig | None, texts: Sequence[str], state_bytes: int, batch_columns: int,
                    max_len: int, vector_bytes: int = 0, unseen: Sequence[str] = (),
                    encode_batch: int = 32) -> Cost:
    """A ColumnsRequest on a specialist server: one micro-batch's forward pass (columns are computed
    `batch_columns` at a time), the states of every column twice (the computed layers and the bytes being sent),
    the request's text and the cell vectors it brought (`vector_bytes`: the message and the float32 copy), and the
    encoding of the `unseen` cell texts nobody sent vectors for (MiniLM, `encode_batch` texts per call)."""
    columns = len(texts)
    tokens = token_bound(texts, cfg.max_len if cfg is not None else max_len)
    activations = forward_bytes(cfg, min(columns, batch_columns), tokens) if cfg is not None else 0
    encoding = encoding_cost(unseen, columns, encode_batch) if unseen else None
    total = (
        max(int(ACTIVATION_SAFETY * activations), encoding.bytes - REQUEST_OVERHEAD if encoding else 0)
        + 2 * columns * state_bytes
        + 2 * sum(len(t) for t in texts)
        + 3 * vector_bytes
        + REQUEST_OVERHEAD
    )
    passes = columns * tokens + (encoding.token_passes if encoding else 0)
    return Cost(total, passes, columns, tokens, 1)


# MiniLM-L6 (6 layers, 384 wide, 12 heads, FFN 1,536) reads at most 256 word pieces plus [CLS] and [SEP].
ENCODER_MAX_TOKENS = 258
ENCODER_WIDTH = 384
ENCODER_HEADS = 12
# Float32 activations alive at once per token in one layer (hidden states, q/k/v, attention output, the FFN's
# 4x intermediate and its activation, norms), in units of the width; plus per head the scores and the softmax.
ENCODER_FLOATS_PER_TOKEN = 12


def encoding_tokens(text: str) -> int:
    """Upper bound of a text's word pieces (one per character, plus [CLS] and [SEP]; the encoder clips)."""
    return min(ENCODER_MAX_TOKENS, len(text) + 2)


def encoding_cost(texts: Sequence[str], columns: int, batch: int) -> Cost:
    """Encoding never-seen cell texts with MiniLM, `batch` texts per call: the largest batch's activations (texts
    are batched longest first, as sentence-transformers does), the vectors made, and the token passes (every
    text's tokens: what the encoding's time grows with)."""
    if not texts:
        return Cost(REQUEST_OVERHEAD, 0, columns, 0, 1)
    lengths = sorted((encoding_tokens(t) for t in texts), reverse=True)
    worst = 0
    for start in range(0, len(lengths), max(1, batch)):
        rows = lengths[start : start + max(1, batch)]
        width = rows[0]
        per_token = ENCODER_FLOATS_PER_TOKEN * ENCODER_WIDTH + 2 * ENCODER_HEADS * width
        worst = max(worst, len(rows) * width * per_token * 4)
    vectors = 3 * len(texts) * ENCODER_WIDTH * 4  # the encoder's output, its float16 rounding, the store's row
    total = int(ACTIVATION_SAFETY * worst) + vectors + REQUEST_OVERHEAD
    return Cost(total, sum(lengths), columns, lengths[0], 1)


class SpecialistPace:
    """How long the specialists take per column, learnt from the fetches that succeeded (an exponential average of
    seconds per column of the widest request in a stage), so that a stage's specialist timeout scales with what it
    asks: the base timeout for an ordinary table, `margin` times the expected time for a wide one, never past the
    table's deadline. Thread-safe."""

    def __init__(self, margin: float = 3.0, weight: float = 0.2) -> None:
        self.margin = margin
        self.weight = weight
        self._seconds_per_column: float | None = None
        self._lock = threading.Lock()

    def record(self, columns: int, seconds: float) -> None:
        if columns <= 0 or seconds <= 0:
            return
        sample = seconds / columns
        with self._lock:
            old = self._seconds_per_column
            self._seconds_per_column = sample if old is None else (1 - self.weight) * old + self.weight * sample

    def expected_s(self, columns: int) -> float:
        """Seconds a request of `columns` columns is expected to take at the pace seen so far (0: none seen)."""
        with self._lock:
            per_column = self._seconds_per_column
        return columns * per_column if per_column is not None else 0.0

    def timeout_s(self, columns: int, base_s: float, left_s: float) -> float:
        """The timeout of a stage whose widest specialist request has `columns` columns."""
        return max(0.0, min(left_s, max(base_s, self.margin * self.expected_s(columns))))


def columns_that_fit(limit_bytes: int, cost: Cost) -> int:
    """Roughly how many columns of this shape a request may carry under `limit_bytes` (at least 1)."""
    per_column = max(1, cost.bytes // max(1, cost.columns))
    return max(1, limit_bytes // per_column)


# ---------------------------------------------------------------------------------------------------------------
# The gate


@dataclass(frozen=True)
class AdmissionLimits:
    """`budget_bytes`: what all running requests may hold together; `max_request_bytes` and
    `max_request_token_passes`: one request's caps; `max_active`: requests computing at once; `max_queued`:
    requests waiting for admission; `max_wait_s`: longest wait for admission; `retry_after_ms`: the retry hint of
    a request refused because the server is busy."""

    budget_bytes: int
    max_request_bytes: int
    max_request_token_passes: int
    max_active: int
    max_queued: int
    max_wait_s: float
    retry_after_ms: int = DEFAULT_RETRY_AFTER_MS

    def __post_init__(self) -> None:
        if min(self.budget_bytes, self.max_request_bytes, self.max_request_token_passes, self.max_active) <= 0:
            raise ValueError(f"admission limits must be positive: {self}")
        if self.max_queued < 0 or self.max_wait_s < 0:
            raise ValueError(f"max_queued and max_wait_s must not be negative: {self}")


class Lease:
    """An admitted request's share of the budget (and of the compute slots, when `slot`); released exactly once (a
    context manager)."""

    def __init__(self, gate: Admission, cost: Cost, slot: bool = True) -> None:
        self._gate = gate
        self.cost = cost
        self.slot = slot
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._gate._release(self)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Admission:
    """First come, first served admission by estimated bytes under a global budget, with bounded waiting."""

    POLL_S = 0.05  # how often a waiter looks at its deadline and its client
    IDLE_TRIM_EVERY_S = 2.0

    def __init__(self, limits: AdmissionLimits, what: str = "request") -> None:
        self.limits = limits
        self.what = what
        self._cond = threading.Condition()
        self._queue: deque[int] = deque()
        self._tickets = itertools.count()
        self.in_use = 0
        self.active = 0
        self.peak_in_use = 0
        self.admitted = 0
        self.rejected = 0
        self._last_trim = 0.0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def _fits(self, cost: Cost, slot: bool = True) -> bool:
        return (not slot or self.active < self.limits.max_active) and (
            self.in_use + cost.bytes <= self.limits.budget_bytes)

    def check(self, cost: Cost) -> None:
        """Refuse a request that no wait could admit (over a per-request cap or the whole budget)."""
        cap = min(self.limits.max_request_bytes, self.limits.budget_bytes)
        if cost.bytes > cap:
            self.rejected += 1
            raise AdmissionRejected.too_large(
                f"this {self.what} needs {cost.describe()} and the limit is {cap / MiB:,.0f} MiB per {self.what}",
                f"send at most {columns_that_fit(cap, cost)} columns per {self.what} (split wide tables)",
            )
        if cost.token_passes > self.limits.max_request_token_passes:
            per_column = max(1, cost.token_passes // max(1, cost.columns))
            self.rejected += 1
            raise AdmissionRejected.too_large(
                f"this {self.what} needs {cost.describe()} and the limit is "
                f"{self.limits.max_request_token_passes:,} token passes per {self.what}",
                f"send at most {max(1, self.limits.max_request_token_passes // per_column)} columns per {self.what}",
            )

    def admit(
        self, cost: Cost, deadline: float | None = None, cancelled: Callable[[], bool] | None = None,
        slot: bool = True,
    ) -> Lease:
        """Wait (bounded) until `cost` fits; `deadline` is a time.monotonic() instant, `cancelled` says when the
        client has gone away; `slot=False` for work that runs on threads of its own (the annotation server's
        encoder): it takes its bytes from the budget but none of the `max_active` slots, so requests that need
        no such work are not kept waiting behind it. Raises AdmissionRejected with the status code and what to
        do."""
        self.check(cost)
        start = time.monotonic()
        give_up = start + self.limits.max_wait_s
        with self._cond:
            must_wait = bool(self._queue) or not self._fits(cost, slot)
            if must_wait and len(self._queue) >= self.limits.max_queued:
                self.rejected += 1
                raise AdmissionRejected.busy(
                    f"{self.active} {self.what}s running and {len(self._queue)} waiting (the limit)",
                    self.limits.retry_after_ms,
                )
            ticket = next(self._tickets)
            self._queue.append(ticket)
            try:
                while not (self._queue[0] == ticket and self._fits(cost, slot)):
                    now = time.monotonic()
                    if cancelled is not None and cancelled():
                        raise AdmissionRejected(grpc.StatusCode.CANCELLED, "the client cancelled the call")
                    if deadline is not None and now >= deadline:
                        raise AdmissionRejected(
                            grpc.StatusCode.DEADLINE_EXCEEDED,
                            f"deadline passed after {now - start:.1f}s waiting for admission",
                        )
                    if now >= give_up:
                        self.rejected += 1
                        raise AdmissionRejected.busy(
                            f"waited {now - start:.1f}s for {cost.bytes / MiB:,.0f} MiB of the "
                            f"{self.limits.budget_bytes / MiB:,.0f} MiB memory budget "
                            f"({self.in_use / MiB:,.0f} MiB in use by {self.active} running)",
                            self.limits.retry_after_ms, " or send smaller tables",
                        )
                    self._cond.wait(min(self.POLL_S, max(0.0, give_up - now)))
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()
            self.in_use += cost.bytes
            self.active += int(slot)
            self.admitted += 1
            self.peak_in_use = max(self.peak_in_use, self.in_use)
        return Lease(self, cost, slot)

    def _release(self, lease: Lease) -> None:
        with self._cond:
            self.in_use -= lease.cost.bytes
            self.active -= int(lease.slot)
            idle = self.active == 0
            self._cond.notify_all()
        now = time.monotonic()
        # After a large request at once; after small ones when the server falls idle, at most every few seconds
        # (a trim walks every arena: cheap, but not free at tens of requests per second).
        large = lease.cost.bytes - REQUEST_OVERHEAD >= TRIM_AFTER_BYTES
        if large or (idle and now - self._last_trim >= self.IDLE_TRIM_EVERY_S):
            self._last_trim = now
            with contextlib.suppress(Exception):
                release_freed_memory()

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "budget_bytes": self.limits.budget_bytes,
                "in_use_bytes": self.in_use,
                "peak_in_use_bytes": self.peak_in_use,
                "active": self.active,
                "queued": len(self._queue),
                "admitted": self.admitted,
                "rejected": self.rejected,
            }
