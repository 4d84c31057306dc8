"""The per-layer weight error table: every tensor of a candidate against the reference, by role and block.

Both sides are read through the canonical graph (so a GGUF with upstream Wan names compares
with a Diffusers folder), one tensor at a time: the reference tensor is read once and compared
with every candidate. Quantized GGUF tensors are dequantized to float32 by the store.

For a tensor ``w`` and its candidate ``q``: ``rel_rmse = ||q - w|| / ||w||`` and
``snr_db = 10 log10(sum w^2 / sum (q - w)^2)`` (``inf`` when equal). Aggregates over a role or
a block use the summed energies, so large tensors weigh as much as their elements.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from vqtool.errors import InputError, MappingError
from vqtool.validate.metrics import json_number


@dataclass
class TensorError:
    name: str
    role: str
    block: int | None
    block_kind: str | None
    shape: tuple[int, ...]
    type: str  # the candidate's storage type (GGML type name or dtype)
    signal: float  # sum of squares of the reference
    noise: float  # sum of squares of the difference
    numel: int

    @property
    def rel_rmse(self) -> float:
        return _rel(self.signal, self.noise)

    @property
    def snr_db(self) -> float:
        return _snr(self.signal, self.noise)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "block": self.block, "block_kind": self.block_kind,
                "shape": list(self.shape), "type": self.type, "numel": self.numel,
                "rel_rmse": json_number(self.rel_rmse), "snr_db": json_number(self.snr_db)}


def _rel(signal: float, noise: float) -> float:
    if signal == 0:
        return 0.0 if noise == 0 else math.inf
    return math.sqrt(noise / signal)


def _snr(signal: float, noise: float) -> float:
    if noise == 0:
        return math.inf
    return -math.inf if signal == 0 else 10.0 * math.log10(signal / noise)


@dataclass
class WeightTable:
    """Per-tensor errors of one candidate, with aggregates by role, by block and overall."""

    tensors: list[TensorError] = field(default_factory=list)

    def _group(self, key) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[TensorError]] = {}
        for t in self.tensors:
            k = key(t)
            if k is not None:
                groups.setdefault(k, []).append(t)
        out = {}
        for k, ts in groups.items():
            s, n = sum(t.signal for t in ts), sum(t.noise for t in ts)
            out[k] = {"tensors": len(ts), "numel": sum(t.numel for t in ts), "rel_rmse": json_number(_rel(s, n)),
                      "snr_db": json_number(_snr(s, n)), "types": sorted({t.type for t in ts})}
        return out

    def by_role(self) -> dict[str, dict[str, Any]]:
        return self._group(lambda t: t.role)

    def by_block(self) -> dict[str, dict[str, Any]]:
        return self._group(lambda t: None if t.block is None else f"{t.block_kind or 'main'}.{t.block}")

    def overall(self) -> dict[str, Any]:
        s, n = sum(t.signal for t in self.tensors), sum(t.noise for t in self.tensors)
        worst = max(self.tensors, key=lambda t: t.rel_rmse, default=None)
        return {"tensors": len(self.tensors), "rel_rmse": json_number(_rel(s, n)), "snr_db": json_number(_snr(s, n)),
                "worst_tensor": worst.name if worst else None,
                "worst_rel_rmse": json_number(worst.rel_rmse) if worst else None}

    def to_dict(self) -> dict[str, Any]:
        return {"overall": self.overall(), "by_role": self.by_role(), "by_block": self.by_block(),
                "tensors": [t.to_dict() for t in self.tensors]}


def _canonical_names(store) -> dict[str, str]:
    """canonical name -> name in ``store`` (renames only; transforms are not expected in candidates)."""
    from vqtool.mapping import identify

    ident = identify(store)
    if ident is None:
        raise MappingError("no mapping table recognises these tensor names", path=store.path)
    ident.check("candidate")
    out = {}
    for g in ident.side.groups:
        if g.transform is not None:
            raise MappingError(f"{g.external} need a transform to compare; convert the file first", path=store.path)
        out.update(zip(g.canonical, g.external))
    return out


def weight_errors(reference: str, candidates: list[str], progress: bool = False) -> list[WeightTable]:
    """One :class:`WeightTable` per candidate path, comparing every canonical tensor with ``reference``."""
    import torch
    from tqdm import tqdm

    from reference_infer.transformer import transformer_store
    from vqtool.mapping import build_graph, convert_to_canonical

    tables = [WeightTable() for _ in candidates]
    stores = [transformer_store(c) for c in candidates]
    try:
        with transformer_store(reference) as ref:
            graph = build_graph(ref)
            names = [_canonical_names(s) for s in stores]
            for path, mapping in zip(candidates, names):
                missing = [t.name for t in graph.tensors if t.name not in mapping]
                if missing:
                    raise InputError(f"does not hold the reference's tensors {missing[:5]} "
                                     f"({len(missing)} missing): is it the same model?", path=path)
            infos = [s.infos() for s in stores]
            bar = tqdm(total=len(graph), desc="weights", unit="tensor", disable=not progress, leave=False)
            for name, w in convert_to_canonical(ref):
                meta = graph[name]
                w = w.to(torch.float32)
                signal = float(w.double().pow(2).sum())
                for table, store, mapping, info in zip(tables, stores, names, infos):
                    q = store.read(mapping[name]).to(torch.float32).reshape(w.shape)
                    noise = float((q - w).double().pow(2).sum())
                    i = info[mapping[name]]
                    table.tensors.append(TensorError(name, meta.role.value, meta.block, meta.block_kind,
                                                     tuple(w.shape), i.ggml_type or i.dtype, signal, noise, w.numel()))
                bar.update(1)
            bar.close()
    finally:
        for s in stores:
            s.close()
    return tables


def candidate_label(path: str, policy: str | None, taken: set[str]) -> str:
    """A short unique name for a candidate: its policy, else its file stem (suffixed when repeated)."""
    base = policy or os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    label, i = base, 2
    while label in taken:
        label, i = f"{base}-{i}", i + 1
    taken.add(label)
    return label
