"""Bit-exact GGML block codecs: quantize float32 rows to every GGUF weight type.

The bytes equal ggml's ``ggml_quantize_chunk`` for the same input and importance
matrix (``*_ref`` without one, ``*_impl`` with one), on numpy (CPU, threaded) or on
torch (any device; see :mod:`vqtool.ggml.torch_ops`). Decoding uses gguf-py.

Where exactness ends: quantized types refuse ``|x| > 2**40`` (ggml's own float32
arithmetic overflows there and its fp16 scales are already inf). The torch path is
verified bit-exact on the CPU; on a GPU, ``test_cuda_path_matches_ggml`` checks it.

Layout: :mod:`~vqtool.ggml.api` (entry points), :mod:`~vqtool.ggml.codecs` (the type
table), :mod:`~vqtool.ggml.search` (ggml's scale searches), one module per codec family
(:mod:`~vqtool.ggml.legacy`, :mod:`~vqtool.ggml.kquants`, :mod:`~vqtool.ggml.kquants_low`,
:mod:`~vqtool.ggml.iq4`, :mod:`~vqtool.ggml.floats`), the array backends
(:mod:`~vqtool.ggml.ops`, :mod:`~vqtool.ggml.torch_ops`) and :mod:`~vqtool.ggml.parallel`.

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
