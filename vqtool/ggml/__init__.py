"""Bit-exact GGML block codecs: quantize float32 rows to every GGUF weight type.

The bytes equal ggml's ``ggml_quantize_chunk`` for the same input and importance
matrix (``*_ref`` without one, ``*_impl`` with one), on numpy (CPU, threaded) or on
torch (any device; see :mod:`vqtool.ggml.torch_ops`). Decoding uses gguf-py.

>>> import numpy as np, vqtool.ggml as g
>>> raw = g.quantize(np.ones((2, 256), np.float32), "Q4_K")
>>> g.dequantize(raw, "Q4_K", (2, 256)).shape
(2, 256)
"""

from vqtool.ggml.api import (
    available_types,
    bits_per_weight,
    block_size,
    can_quantize,
    codec,
    dequantize,
    quantize,
    row_size,
)
from vqtool.ggml.registry import Codec, CodecRegistry, resolve_qtype

__all__ = [
    "Codec",
    "CodecRegistry",
    "available_types",
    "bits_per_weight",
    "block_size",
    "can_quantize",
    "codec",
    "dequantize",
    "quantize",
    "resolve_qtype",
    "row_size",
]
