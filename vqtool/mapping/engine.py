"""The mapping engine: identify a store, build its canonical graph, plan and stream a conversion.

Typical use::

    from vqtool.io import open_store
    from vqtool.mapping import plan_conversion, iter_converted
    with open_store("Wan2.1-T2V-1.3B/") as store:
        plan = plan_conversion(store, "diffusers")          # names, shapes, dtypes; no data read
        for name, tensor in iter_converted(store, plan):    # one group at a time
            ...

A store is anything with ``infos()`` (name -> TensorInfo with ``shape`` and ``dtype``),
``read(name)`` and optionally ``config`` (the folder's config.json).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vqtool.errors import DetectionError, MappingError
from vqtool.graph import CanonicalTensor, ModelGraph
from vqtool.mapping import transforms
from vqtool.mapping.names import Group, SideMap, map_canonical, map_external
from vqtool.mapping.patterns import evaluate
from vqtool.mapping.tables import CanonicalTable, FormatTable, Registry, load_registry

log = logging.getLogger(__name__)


@dataclass
class Identification:
    """What a store holds: its format table, canonical table, name map and canonical graph."""

    table: FormatTable
    canonical: CanonicalTable
    side: SideMap
    graph: ModelGraph
    missing: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Unknown, incomplete and missing names, as lines for an error message."""
        out = []
        if self.side.unknown:
            out.append(f"unknown tensors ({len(self.side.unknown)}): {_few(self.side.unknown)}")
        if self.side.incomplete:
            out.append(f"tensors missing from a group ({len(self.side.incomplete)}): {_few(self.side.incomplete)}")
        if self.missing:
            out.append(f"missing tensors ({len(self.missing)}): {_few(self.missing)}")
        return out

    def check(self, what: str = "source") -> None:
        """Raise MappingError listing unknown and missing keys, if any."""
        lines = self.problems()
        if lines:
            raise MappingError(
                f"{what} does not match the {self.table.family} {self.table.component} '{self.table.format}' layout "
                f"({self.table.source}): " + "; ".join(lines)
                + ". Check that the file is complete and of the detected kind, or add rows to the table."
            )


def _few(names: list[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... and {len(names) - limit} more" if len(names) > limit else "")


def _signature_matches(table: FormatTable, names: set[str]) -> bool:
    def has(key: str) -> bool:
        return key in names or any(p + key in names for p in table.prefixes)

    if not table.detect_keys or any(has(b) for b in table.detect_banned):
        return False
    return any(all(has(k) for k in keyset) for keyset in table.detect_keys)


def detect_table(names: set[str], registry: Registry | None = None) -> FormatTable | None:
    """The one format table whose declared signature matches ``names``; None if none; ambiguity is an error."""
    registry = registry or load_registry()
    hits = [t for t in registry.formats.values() if _signature_matches(t, names)]
    if len(hits) > 1:
        raise DetectionError(
            "tensor names match several layouts: " + ", ".join(f"{t.family}/{t.component}/{t.format}" for t in hits)
            + "; pass --family/--component/--from to choose"
        )
    return hits[0] if hits else None


def _config(canonical: CanonicalTable, kind: str, shapes: dict[str, tuple[int, ...]], table: FormatTable,
            json_config: dict | None, source_names: set[str] = frozenset()) -> dict[str, Any]:
    def shape(name: str) -> list[int]:
        if name not in shapes:
            raise MappingError(f"config needs tensor {name!r}, which is not present")
        return list(shapes[name])

    def matches(pattern: str) -> list[dict[str, int]]:
        from vqtool.mapping.patterns import Pattern

        pat = Pattern(pattern)
        return [v for n in shapes if (v := pat.match(n)) is not None]

    def indices(pattern: str) -> list[int]:
        return sorted({next(iter(v.values())) for v in matches(pattern)})

    funcs = {"shape": shape, "has": lambda n: n in shapes, "indices": indices, "count": lambda p: len(indices(p))}
    config: dict[str, Any] = {"kind": kind}
    for key, expr in canonical.config.items():
        config[key] = evaluate(expr, config, funcs)
    if table.config_from_names:
        def has_source(name: str) -> bool:
            return name in source_names or any(p + name in source_names for p in table.prefixes)

        for key, expr in table.config_from_names.items():
            config[key] = evaluate(expr, config, {"has_source": has_source})
    if json_config:
        for key, expr in table.config_from_json.items():
            try:
                value = evaluate(expr, json_config)
            except MappingError:
                continue
            if value is not None and config.get(key) != value:
                log.debug("config %s: %r from config.json (shapes gave %r)", key, value, config.get(key))
                config[key] = value
    return config


def expected_canonical(canonical: CanonicalTable, kind: str, present: list[str]) -> list[str]:
    """Every canonical name the table requires for this kind, with block counts taken from ``present``."""
    observed: dict[str, set[int]] = {}
    for name in present:
        for row in canonical.rows:
            if row.block_kind and (v := row.pattern.match(name)) is not None and row.block_field in v:
                observed.setdefault(row.block_kind, set()).add(v[row.block_field])
    out = []
    for row in canonical.rows:
        if row.kinds is not None and kind not in row.kinds:
            continue
        ranges = []
        for f in row.pattern.fields:
            if f in row.values:
                ranges.append(row.values[f])
            elif row.block_kind and f == row.block_field:
                seen = observed.get(row.block_kind, set())
                ranges.append(tuple(range(max(seen) + 1)) if seen else ())
            else:
                ranges.append(tuple(sorted({v[f] for n in present if (v := row.pattern.match(n)) is not None})))
        for combo in itertools.product(*ranges):
            vals = dict(zip(row.pattern.fields, combo))
            if row.where is None or evaluate(row.where, vals):
                out.append(row.pattern.format(vals))
    return out


def _meta_outputs(fn: str, args: dict, shapes: list[tuple], dtypes: list[str], n_out: int, where: str):
    import torch

    from vqtool.io.base import dtype_name, torch_dtype

    ins = [torch.empty(s, dtype=torch_dtype(d), device="meta") for s, d in zip(shapes, dtypes)]
    outs = transforms.apply(fn, ins, args, n_out, where)
    return [(tuple(o.shape), dtype_name(o.dtype)) for o in outs]


def identify(store, *, family: str | None = None, component: str | None = None, fmt: str | None = None,
             registry: Registry | None = None) -> Identification | None:
    """Find the store's layout and build its canonical graph (no data read). None if no table matches."""
    registry = registry or load_registry()
    infos = store.infos()
    names = list(infos)
    if fmt or family or component:
        cands = [t for (fa, c, f), t in registry.formats.items()
                 if (family is None or fa == family) and (component is None or c == component) and (fmt is None or f == fmt)]
        sig = [t for t in cands if _signature_matches(t, set(names))]
        if len(cands) == 1:
            table = cands[0]
        elif len(sig) == 1:
            table = sig[0]
        elif not sig:
            return None
        else:
            raise DetectionError(f"several layouts fit: {[t.source for t in sig]}; be more specific")
    else:
        table = detect_table(set(names), registry)
        if table is None:
            return None
    canonical = registry.canonical_for(table.family, table.component)
    side = map_external(names, table, canonical)
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}
    for g in side.groups:
        src_shapes = [tuple(infos[n].shape) for n in g.external]
        src_dtypes = [_plan_dtype(infos[n]) for n in g.external]
        if g.transform is None:
            outs = [(src_shapes[0], src_dtypes[0])]
        else:
            outs = _meta_outputs(g.transform.fn, g.transform.args, src_shapes, src_dtypes, len(g.canonical),
                                 f"{g.external} ({table.source})")
        for c, (s, d) in zip(g.canonical, outs):
            if c in shapes:
                raise MappingError(f"two source tensors map to canonical {c!r} ({table.source}); the file has duplicates")
            shapes[c], dtypes[c] = s, d
    present = list(shapes)
    kind = next((k for k, keys in canonical.kinds if all(key in shapes for key in keys)), canonical.kinds[-1][0])
    try:
        config = _config(canonical, kind, shapes, table, getattr(store, "config", None), set(names))
        variant = str(evaluate(canonical.variant, config))
    except MappingError as exc:
        log.debug("config derivation failed: %s", exc)
        config, variant = {"kind": kind}, kind
    expected = expected_canonical(canonical, kind, present)
    expected_set = set(expected)
    missing = [n for n in expected if n not in shapes]
    extra = [n for n in present if n not in expected_set]
    tensors = []
    for name in present:
        row = next((r for r in canonical.rows if r.pattern.match(name) is not None), None)
        if row is None:
            continue
        vals = row.pattern.match(name)
        block = vals.get(row.block_field) if row.block_kind else None
        tensors.append(CanonicalTensor(name, shapes[name], dtypes[name], row.role, block, row.block_kind))
    ident = Identification(table, canonical, side,
                           ModelGraph(table.family, variant, table.component, config, tensors), missing)
    # Names a table maps but the canonical table does not expect for this kind: report as unknown.
    side.unknown += [f"{n} (canonical; not expected for kind {kind!r})" for n in extra]
    return ident


def _plan_dtype(info) -> str:
    # GGUF quantized tensors are read back dequantized to float32.
    return "F32" if getattr(info, "ggml_type", None) and info.dtype not in _PLAIN else info.dtype


_PLAIN = {"F32", "F16", "BF16", "F64", "F8_E4M3", "F8_E5M2", "I64", "I32", "I16", "I8", "U8", "BOOL"}


def build_graph(store, **kwargs) -> ModelGraph:
    """The canonical graph of ``store``; raises MappingError if names are unknown or missing."""
    ident = identify(store, **kwargs)
    if ident is None:
        raise DetectionError("no mapping table recognises these tensor names; is this a Wan or CogVideoX checkpoint?")
    ident.check()
    return ident.graph
