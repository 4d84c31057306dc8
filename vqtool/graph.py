"""The canonical tensor graph: a model as family, variant, config and role-tagged tensors.

Every checkpoint format maps onto one canonical naming per family (Wan: the
upstream Wan-Video/Wan2.1 names; CogVideoX: the Diffusers names with unfused
q/k/v), so quantization policies select tensors by :class:`Role`, block index
and block kind without knowing the file format they came from.

Example::

    from vqtool.mapping import build_graph
    graph = build_graph(store)
    [t.name for t in graph.by_role(Role.ATTN_SELF_Q)]
"""

from __future__ import annotations

import math

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Role(str, Enum):
    """What a tensor does; declared per row in the canonical tables, never guessed from names."""

    ATTN_SELF_Q = "attn.self.q"
    ATTN_SELF_K = "attn.self.k"
    ATTN_SELF_V = "attn.self.v"
    ATTN_SELF_OUT = "attn.self.out"
    ATTN_CROSS_Q = "attn.cross.q"
    ATTN_CROSS_K = "attn.cross.k"
    ATTN_CROSS_V = "attn.cross.v"
    ATTN_CROSS_OUT = "attn.cross.out"
    ATTN_IMAGE_K = "attn.image.k"
    ATTN_IMAGE_V = "attn.image.v"
    ATTN_QK_NORM = "attn.qk_norm"
    ATTN_REL_BIAS = "attn.rel_bias"
    FFN_UP = "ffn.up"
    FFN_GATE = "ffn.gate"
    FFN_DOWN = "ffn.down"
    NORM = "norm"
    MODULATION = "modulation"
    EMBED_PATCH = "embed.patch"
    EMBED_TEXT = "embed.text"
    EMBED_TIME = "embed.time"
    EMBED_TIME_PROJ = "embed.time_proj"
    EMBED_IMAGE = "embed.image"
    EMBED_POS = "embed.pos"
    EMBED_OFS = "embed.ofs"
    EMBED_TOKEN = "embed.token"
    HEAD = "head"
    HEAD_MODULATION = "head.modulation"
    VACE_PROJ = "vace.proj"
    CONV = "conv"
    OTHER = "other"

    @classmethod
    def parse(cls, value: str) -> "Role":
        """The role named ``value``; raises ValueError listing the vocabulary otherwise."""
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"unknown role {value!r}; roles are: {', '.join(r.value for r in cls)}") from None


BLOCK_KINDS = ("main", "vace")


@dataclass(frozen=True)
class CanonicalTensor:
    """One tensor under its canonical name."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    role: Role
    block: int | None = None
    block_kind: str | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class ModelGraph:
    """A model in canonical form: what it is (family, variant, component, config) and its tensors."""

    family: str
    variant: str
    component: str
    config: dict[str, Any]
    tensors: list[CanonicalTensor] = field(default_factory=list)

    def __iter__(self) -> Iterator[CanonicalTensor]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, name: str) -> CanonicalTensor:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def by_role(self, *roles: Role | str) -> list[CanonicalTensor]:
        """Tensors whose role is one of ``roles``."""
        wanted = {Role(r) for r in roles}
        return [t for t in self.tensors if t.role in wanted]

    def blocks(self, kind: str = "main") -> list[int]:
        """Sorted block indices of the given block kind."""
        return sorted({t.block for t in self.tensors if t.block_kind == kind and t.block is not None})

    def num_params(self) -> int:
        return sum(t.numel for t in self.tensors)
