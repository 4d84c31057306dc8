"""Unquantized storage types: F32, F16 and BF16 (block size 1).

F16 is ``GGML_FP32_TO_FP16`` (round to nearest even, numpy's ``astype``); BF16 is
``ggml_compute_fp32_to_bf16``: ``(u + 0x7fff + ((u >> 16) & 1)) >> 16`` on the float's
bits, which rounds to nearest even and keeps subnormals. These run in numpy on any
backend (they are memory-bound conversions); the encoders return ``(n, bytes)``.
"""

from __future__ import annotations

import numpy as np


def _host(o, x) -> np.ndarray:
    return np.ascontiguousarray(o.to_numpy(x), dtype=np.float32)


def encode_f32(o, x, qw=None):
    return _host(o, x).reshape(-1).view(np.uint8).reshape(-1, 4)


def encode_f16(o, x, qw=None):
    with np.errstate(over="ignore"):  # |x| > 65504 becomes inf, as in ggml
        return _host(o, x).reshape(-1).astype("<f2").view(np.uint8).reshape(-1, 2)


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 array -> uint16 bfloat16 bits, rounded like ggml (NaN made quiet)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, ((u >> 16) | 64).astype(np.uint16), rounded)


def encode_bf16(o, x, qw=None):
    return to_bf16_bits(_host(o, x).reshape(-1)).astype("<u2").view(np.uint8).reshape(-1, 2)
