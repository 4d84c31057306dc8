"""The codec registry: one :class:`Codec` per GGML type, registered once by name.

A codec knows its block geometry (from gguf-py's ``GGML_QUANT_SIZES``, so it can never
disagree with the GGUF writer or reader), its encoder and whether ggml's
``ggml_quantize_chunk`` uses an importance matrix for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from vqtool.errors import VqtoolError


@dataclass(frozen=True)
class Codec:
    """One GGML storage type.

    ``encode(ops, x, qw)`` maps float32 ``(rows, n_per_row)`` (an ops-backend array) to
    ``(rows * n_per_row / block_size, type_size)`` uint8 blocks. ``uses_imatrix`` is
    False where ggml ignores ``quant_weights`` (floats, Q8_0): ``qw`` is then None.
    """

    qtype: GGMLQuantizationType
    encode: Callable
    uses_imatrix: bool
    note: str = ""

    @property
    def name(self) -> str:
        return self.qtype.name

    @property
    def block_size(self) -> int:
        return GGML_QUANT_SIZES[self.qtype][0]

    @property
    def type_size(self) -> int:
        return GGML_QUANT_SIZES[self.qtype][1]

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.type_size / self.block_size

    def row_size(self, n_per_row: int) -> int:
        """Bytes of one row of ``n_per_row`` elements (``ggml_row_size``)."""
        return n_per_row // self.block_size * self.type_size


class CodecRegistry:
    """Codecs by type; registering a type twice is an error."""

    def __init__(self) -> None:
        self._codecs: dict[GGMLQuantizationType, Codec] = {}

    def register(self, codec: Codec) -> Codec:
        if codec.qtype in self._codecs:
            raise VqtoolError(f"codec for GGML type {codec.name} is already registered")
        self._codecs[codec.qtype] = codec
        return codec

    def get(self, qtype) -> Codec:
        """Look a codec up by ``GGMLQuantizationType``, its name (``"q4_k"``) or its id."""
        key = resolve_qtype(qtype)
        try:
            return self._codecs[key]
        except KeyError:
            raise VqtoolError(
                f"GGML type {key.name} has no vqtool codec; available: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return [q.name for q in sorted(self._codecs, key=int)]

    def __contains__(self, qtype) -> bool:
        try:
            return resolve_qtype(qtype) in self._codecs
        except VqtoolError:
            return False

    def __iter__(self):
        return iter(sorted(self._codecs.values(), key=lambda c: int(c.qtype)))


def resolve_qtype(qtype) -> GGMLQuantizationType:
    """``"Q4_K"``, ``"q4_k"``, ``12`` or ``GGMLQuantizationType.Q4_K`` -> the enum."""
    if isinstance(qtype, GGMLQuantizationType):
        return qtype
    if isinstance(qtype, str):
        try:
            return GGMLQuantizationType[qtype.strip().upper()]
        except KeyError:
            raise VqtoolError(f"unknown GGML type name {qtype!r}") from None
    try:
        return GGMLQuantizationType(int(qtype))
    except (TypeError, ValueError):
        raise VqtoolError(f"unknown GGML type {qtype!r}") from None
