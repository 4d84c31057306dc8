"""Plan a conversion between two formats of one model, then stream it group by group.

A plan is pure data (target names, shapes, dtypes, which source tensors feed each unit); it is
made without reading tensor data, so ``--dry-run`` and tests can inspect it. Executing it reads
one *unit* at a time: the source tensors of one source group plus whatever target groups share
its canonical tensors (e.g. a fused SAT QKV and the three Diffusers linears it becomes).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vqtool.errors import DetectionError, MappingError
from vqtool.mapping import transforms
from vqtool.io.base import DTYPE_SIZES
from vqtool.mapping.engine import Identification, _meta_outputs, identify
from vqtool.mapping.names import Group, map_canonical
from vqtool.mapping.patterns import evaluate
from vqtool.mapping.tables import FormatTable, load_registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    sources: tuple[str, ...]

    @property
    def nbytes(self) -> int:
        n = DTYPE_SIZES[self.dtype]
        for d in self.shape:
            n *= d
        return n


@dataclass
class Unit:
    """Source groups and target groups that share canonical tensors: converted together."""

    source: list[Group]
    target: list[Group]


@dataclass
class ConversionPlan:
    """Everything a conversion will write, known before any tensor is read."""

    family: str
    component: str
    variant: str
    source_format: str
    target_format: str
    config: dict[str, Any]
    tensors: list[PlannedTensor]
    ignored: list[tuple[str, str]]
    units: list[Unit]
    target_table: FormatTable
    prefix: str = ""
    config_json: dict[str, Any] | None = None

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)

    @property
    def largest_bytes(self) -> int:
        return max((t.nbytes for t in self.tensors), default=0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (for ``--json`` / ``--dry-run``)."""
        return {
            "family": self.family, "component": self.component, "variant": self.variant,
            "from": self.source_format, "to": self.target_format, "prefix": self.prefix,
            "config": self.config, "config_json": self.config_json,
            "tensors": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "sources": list(t.sources)}
                        for t in self.tensors],
            "ignored": [{"name": n, "reason": r} for n, r in self.ignored],
            "total_bytes": self.total_bytes,
        }


def _units(source: list[Group], target: list[Group]) -> list[Unit]:
    by_canonical = {c: i for i, g in enumerate(target) for c in g.canonical}
    parent = list(range(len(source)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[int, int] = {}
    for si, g in enumerate(source):
        for c in g.canonical:
            ti = by_canonical[c]
            if ti in owner:
                parent[find(si)] = find(owner[ti])
            else:
                owner[ti] = si
    members: dict[int, list[int]] = {}
    for si in range(len(source)):
        members.setdefault(find(si), []).append(si)
    units = []
    for root in sorted(members, key=lambda r: min(members[r])):
        sis = members[root]
        tis = sorted({by_canonical[c] for si in sis for c in source[si].canonical})
        units.append(Unit([source[si] for si in sis], [target[ti] for ti in tis]))
    return units


def _config_json(table: FormatTable, config: dict[str, Any]) -> dict[str, Any] | None:
    if table.config_json is None:
        return None
    out = {}
    for key, expr in table.config_json.items():
        value = evaluate(expr, config) if isinstance(expr, str) else expr
        if value is not None or not key.startswith("?"):
            out[key.lstrip("?")] = value
    return out


def plan_conversion(store, to: str, *, prefix: str = "", ident: Identification | None = None, **identify_kwargs) -> ConversionPlan:
    """Plan converting ``store`` into format ``to`` ("diffusers", "original", "sat", ...).

    Raises MappingError listing unknown and missing source tensors, and canonical tensors the
    target format has no name for. ``prefix`` (e.g. ``model.diffusion_model.``) is put in front
    of every target name; it must be one the target table declares.
    """
    ident = ident or identify(store, **identify_kwargs)
    if ident is None:
        raise DetectionError("no mapping table recognises these tensor names; is this a supported checkpoint?")
    ident.check()
    graph = ident.graph
    registry = load_registry()
    target_table = registry.format_for(graph.family, graph.component, to)
    canonical_names = [t.name for t in graph.tensors]
    tside = map_canonical(canonical_names, target_table, ident.canonical, prefix)
    if tside.unknown or tside.incomplete:
        raise MappingError(
            f"{target_table.source} has no name for canonical tensors "
            f"{tside.unknown + tside.incomplete}; add rows to that table"
        )
    shapes = {t.name: (t.shape, t.dtype) for t in graph.tensors}
    units = _units(ident.side.groups, tside.groups)
    planned = []
    for unit in units:
        sources = tuple(n for g in unit.source for n in g.external)
        for g in unit.target:
            ins = [shapes[c] for c in g.canonical]
            if g.transform is None:
                outs = ins
            else:
                outs = _meta_outputs(g.transform.inverse, g.transform.inverse_args, [s for s, _ in ins],
                                     [d for _, d in ins], len(g.external), f"{g.canonical} ({target_table.source})")
            for name, (shape, dtype) in zip(g.external, outs):
                planned.append(PlannedTensor(name, tuple(shape), dtype, sources))
    seen: set[str] = set()
    dups = [t.name for t in planned if t.name in seen or seen.add(t.name)]
    if dups:
        raise MappingError(f"{target_table.source}: several tensors would be written as {dups}")
    return ConversionPlan(
        family=graph.family, component=graph.component, variant=graph.variant,
        source_format=ident.table.format, target_format=to, config=graph.config, tensors=planned,
        ignored=list(ident.side.ignored), units=units, target_table=target_table, prefix=prefix,
        config_json=_config_json(target_table, graph.config),
    )


def iter_converted(store, plan: ConversionPlan) -> Iterator[tuple[str, "torch.Tensor"]]:  # noqa: F821
    """Yield ``(target name, tensor)`` in plan order, reading one unit's source tensors at a time."""
    for unit in plan.units:
        canonical = {}
        for g in unit.source:
            ins = [store.read(n) for n in g.external]
            outs = ins if g.transform is None else transforms.apply(
                g.transform.fn, ins, g.transform.args, len(g.canonical), str(g.external))
            canonical.update(zip(g.canonical, outs))
            del ins, outs
        for g in unit.target:
            ins = [canonical[c] for c in g.canonical]
            outs = ins if g.transform is None else transforms.apply(
                g.transform.inverse, ins, g.transform.inverse_args, len(g.external), str(g.canonical))
            yield from zip(g.external, outs)
            del ins, outs
        canonical.clear()


def convert_to_canonical(store, **identify_kwargs) -> Iterator[tuple[str, "torch.Tensor"]]:  # noqa: F821
    """Yield ``(canonical name, tensor)`` for every tensor of ``store``, one group at a time."""
    ident = identify(store, **identify_kwargs)
    if ident is None:
        raise DetectionError("no mapping table recognises these tensor names")
    ident.check()
    for g in ident.side.groups:
        ins = [store.read(n) for n in g.external]
        outs = ins if g.transform is None else transforms.apply(
            g.transform.fn, ins, g.transform.args, len(g.canonical), str(g.external))
        yield from zip(g.canonical, outs)
