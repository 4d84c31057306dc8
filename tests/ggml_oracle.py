"""ggml's own C quantizer as a test oracle: ``ggml_quantize_chunk`` through ctypes.

Loads ``libggml-base.so`` from the ``libggml-python`` wheel (a dev dependency), the
same library llama-quantize links. Also used by ``scripts/bench_codecs.py``.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType


def library_path() -> str | None:
    spec = importlib.util.find_spec("libggml")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        for pattern in ("lib64/libggml-base.so", "lib/libggml-base.so", "**/libggml-base.so*"):
            hits = sorted(glob.glob(os.path.join(root, pattern), recursive=True))
            if hits:
                return hits[0]
    return None


_lib = None


def load():
    """The ctypes handle, or None when libggml-python is not installed."""
    global _lib
    if _lib is None:
        path = library_path()
        if path is None:
            return None
        lib = ctypes.CDLL(path)
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_quantize_chunk.argtypes = [
            ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
            ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p,
        ]
        lib.ggml_row_size.restype = ctypes.c_size_t
        lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        _lib = lib
    return _lib


def quantize_chunk(x: np.ndarray, qtype, imatrix: np.ndarray | None = None) -> np.ndarray:
    """``ggml_quantize_chunk(type, x, dst, 0, rows, n_per_row, imatrix)`` -> ``(rows, row_bytes)``."""
    lib = load()
    qt = GGMLQuantizationType[qtype] if isinstance(qtype, str) else GGMLQuantizationType(qtype)
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows, n = x.shape
    block, size = GGML_QUANT_SIZES[qt]
    row_bytes = n // block * size
    assert lib.ggml_row_size(int(qt), n) == row_bytes
    out = np.zeros((rows, row_bytes), dtype=np.uint8)
    qw = None
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        qw = imatrix.ctypes.data
    written = lib.ggml_quantize_chunk(int(qt), x.ctypes.data, out.ctypes.data, 0, rows, n, qw)
    assert written == out.nbytes, (written, out.nbytes)
    return out


# -- test matrices ---------------------------------------------------------------------
# Each kind stresses a different branch of the C code; every generator is deterministic.

def _gaussian(rng, rows, n):
    return rng.standard_normal((rows, n))


def _student_t(rng, rows, n):
    return rng.standard_t(3, (rows, n))


def _outlier_columns(rng, rows, n):
    cols = rng.random(n) < 0.02
    return rng.standard_normal((rows, n)) * np.where(cols, 200.0, 1.0)[None]


def _zero_blocks(rng, rows, n):
    # whole 32-element blocks of +0.0, and -0.0 / +0.0 mixed into sparse blocks
    keep = rng.random((rows, n // 32, 1)) < 0.5
    x = rng.standard_normal((rows, n)) * np.repeat(keep, 32, axis=2).reshape(rows, n)
    x[:, : n // 2] *= rng.random((rows, n // 2)) < 0.1
    return x


def _constant_blocks(rng, rows, n):
    x = np.repeat(rng.standard_normal((rows, n // 16)), 16, axis=1)
    x[0, :256] = 1.0
    x[-1, -256:] = -3.5
    return x


def _tiny(rng, rows, n):
    # around and below the fp16 subnormal range (6e-8 .. 6e-5)
    return rng.standard_normal((rows, n)) * np.geomspace(1e-9, 1e-4, rows)[:, None]


def _large(rng, rows, n):
    # up to vqtool.ggml's limit of 2**40; fp16 scales overflow to inf from about 1e6 on
    x = rng.standard_normal((rows, n)) * np.geomspace(1e2, 1e11, rows)[:, None]
    x[-1, 7] = 2.0 ** 40
    return x


def _f32_subnormal(rng, rows, n):
    # float32 subnormals: 1/d overflows to inf in the legacy types and in the K-quant search
    return rng.standard_normal((rows, n)) * np.geomspace(1e-44, 1e-36, rows)[:, None]


def _quarter_steps(rng, rows, n):
    # exact .25 steps: ties for every rounding rule
    return rng.integers(-8, 9, (rows, n)) * 0.25


DATA_KINDS = {
    "gaussian": _gaussian,
    "student_t": _student_t,
    "outlier_columns": _outlier_columns,
    "zero_blocks": _zero_blocks,
    "constant_blocks": _constant_blocks,
    "tiny": _tiny,
    "large": _large,
    "f32_subnormal": _f32_subnormal,
    "quarter_steps": _quarter_steps,
}


def make_matrix(kind: str, rows: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, sum(map(ord, kind))])
    return np.ascontiguousarray(DATA_KINDS[kind](rng, rows, n), dtype=np.float32)


def make_imatrix(n: int, seed: int = 0) -> np.ndarray:
    """Mean squared activations: lognormal, with a few exact zeros (dead channels)."""
    rng = np.random.default_rng([seed, 7])
    qw = rng.lognormal(0.0, 1.5, n)
    qw[rng.random(n) < 0.05] = 0.0
    return qw.astype(np.float32)


def first_mismatch(ours: np.ndarray, ref: np.ndarray, type_size: int) -> str:
    """'' when equal, else a description of the first differing block."""
    a = ours.reshape(-1, type_size)
    b = ref.reshape(-1, type_size)
    bad = np.flatnonzero((a != b).any(axis=1))
    if bad.size == 0:
        return ""
    i = int(bad[0])
    return (f"{bad.size}/{a.shape[0]} blocks differ; first is block {i}:\n"
            f"  vqtool {a[i].tolist()}\n  ggml   {b[i].tolist()}")
