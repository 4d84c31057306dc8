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
