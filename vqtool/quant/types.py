"""GGML storage types as vqtool's policies use them: sizes, fallbacks, and the "keep" rule.

Sizes come from gguf-py's ``GGML_QUANT_SIZES`` so they always agree with the reader.
"""

from __future__ import annotations

import math

from vqtool.errors import PolicyError

FLOAT_TYPES = ("F32", "F16", "BF16")
QUANT_TYPES = (
    "Q8_0", "Q6_K", "Q5_K", "Q5_1", "Q5_0", "Q4_K", "Q4_1", "Q4_0", "IQ4_NL", "IQ4_XS", "Q3_K", "Q2_K",
)
# "keep": high precision as the consumers require (see keep_type).
POLICY_TYPES = FLOAT_TYPES + QUANT_TYPES + ("KEEP",)

# When a row length is not divisible by the chosen type's block, fall back (llama.cpp's
# newest table, src/llama-quant.cpp), then to F16 if that does not divide either.
FALLBACK: dict[str, str] = {
    "Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "IQ4_XS": "IQ4_NL",
}


def normalize_type(name: str, where: str = "") -> str:
    """Upper-case GGML type name, validated (``"q4_k"`` -> ``"Q4_K"``)."""
    t = str(name).strip().upper()
    if t not in POLICY_TYPES:
        raise PolicyError(f"{where}unknown type {name!r}; use one of {', '.join(POLICY_TYPES)}")
    return t


def block_size(qtype: str) -> int:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType[qtype]][0]


def nbytes(qtype: str, shape: tuple[int, ...]) -> int:
    """Stored size of a tensor of ``shape`` (torch order) in ``qtype``."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    blk, size = GGML_QUANT_SIZES[GGMLQuantizationType[qtype]]
    n = math.prod(shape)
    return n // blk * size


def bits_per_weight(qtype: str) -> float:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    blk, size = GGML_QUANT_SIZES[GGMLQuantizationType[qtype]]
    return 8 * size / blk


def fits(qtype: str, shape: tuple[int, ...]) -> bool:
    """Whether rows of this tensor (its last dim) divide into ``qtype`` blocks."""
    return bool(shape) and shape[-1] % block_size(qtype) == 0


def resolve_fallback(qtype: str, shape: tuple[int, ...]) -> tuple[str, list[str]]:
    """The type actually usable for ``shape`` and the chain of types tried before it."""
    tried: list[str] = []
    t = qtype
    while not fits(t, shape):
        tried.append(t)
        t = FALLBACK.get(t, "F16")
        if t == "F16":
            break
    return t, tried


def keep_type(source_dtype: str, shape: tuple[int, ...], role: str) -> str:
    """High-precision type for a tensor that is not quantized.

    F32 for 1-D tensors, tensors of at most 1024 elements, modulation tables (not the
    2-D adaLN Linears of CogVideoX, which are ordinary matmuls) and
    >4-D conv weights (ComfyUI-GGUF: "nn.parameter, can't load from BF16"; ggml ops
    have no Conv3d); otherwise BF16 for BF16 sources and F16 for the rest.
    """
    table = role in ("modulation", "head.modulation") and len(shape) != 2  # Wan [1, 6, d]; not adaLN Linears
    if len(shape) <= 1 or math.prod(shape) <= 1024 or table or len(shape) > 4:
        return "F32"
    return "BF16" if source_dtype == "BF16" else "F16"
