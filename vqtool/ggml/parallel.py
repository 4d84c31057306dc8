"""Row-chunked execution of an encoder, over threads on the CPU.

Every ggml quantizer is row-local, so a matrix can be cut into chunks of whole rows
and encoded independently (ggml's own output does not depend on chunking either).
Chunks are sized to keep each codec's working arrays in the CPU cache, which matters
more than anything else for the numpy path; numpy releases the GIL inside its array
loops, so a thread pool keeps both cores busy.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Rows are encoded in chunks of about this many elements. 256 K keeps a chunk's float32
# passes within L2-friendly sizes while giving numpy enough work per call that two threads
# overlap instead of queueing on the GIL (measured on 2 cores, idle: Q4_K 8.3 -> 18.6 Melem/s
# with 2 threads going from 64 K to 256 K elements).
CHUNK_ELEMENTS = 1 << 18
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def default_threads() -> int:
    return os.cpu_count() or 1


def _pool(workers: int) -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="vqtool-ggml")
        return pool


def row_chunks(rows: int, n_per_row: int, chunk_elements: int | None = None) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` row ranges of about ``chunk_elements`` (default CHUNK_ELEMENTS) elements each."""
    chunk_elements = chunk_elements or CHUNK_ELEMENTS
    step = max(1, chunk_elements // max(1, n_per_row))
    return [(r, min(rows, r + step)) for r in range(0, rows, step)]


def encode_rows(encode, ops, x, qw, row_bytes: int, threads: int, chunk_elements: int | None = None) -> np.ndarray:
    """Run ``encode(ops, x[a:b], qw)`` over row chunks; return ``(rows, row_bytes)`` uint8."""
    rows, n_per_row = x.shape
    out = np.empty((rows, row_bytes), dtype=np.uint8)

    def work(span):
        a, b = span
        # inf * 0 and 1/subnormal happen in C too; the codecs reproduce their results
        with ops.errstate():
            out[a:b] = ops.to_numpy(encode(ops, x[a:b], qw)).reshape(b - a, row_bytes)

    spans = row_chunks(rows, n_per_row, chunk_elements)
    if threads <= 1 or len(spans) == 1:
        for span in spans:
            work(span)
    else:
        for _ in _pool(threads).map(work, spans):
            pass
    return out
