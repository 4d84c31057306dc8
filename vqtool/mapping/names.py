"""Name matching for one format: external names <-> canonical names, group by group, no data read."""

from __future__ import annotations

from dataclasses import dataclass, field

from vqtool.errors import MappingError
from vqtool.mapping.patterns import Pattern, evaluate
from vqtool.mapping.tables import CanonicalTable, FormatTable, RenameRow, TransformRow


@dataclass
class Group:
    """One unit of mapping: a rename (one name each side) or a transform (several names each side)."""

    external: list[str]
    canonical: list[str]
    transform: TransformRow | None = None
    note: str = ""


@dataclass
class SideMap:
    """How one store's names map to canonical names under one format table."""

    groups: list[Group] = field(default_factory=list)
    ignored: list[tuple[str, str]] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    prefix: str = ""

    def canonical_names(self) -> list[str]:
        return [c for g in self.groups for c in g.canonical]


def _other_fields(values: dict[str, int], exprs: dict[str, str], target: Pattern) -> dict[str, int]:
    """Field values of ``target`` from the matched ``values`` (same name unless an expression says otherwise)."""
    out = {}
    for f in target.fields:
        if f in exprs:
            out[f] = int(evaluate(exprs[f], values))
        elif f in values:
            out[f] = values[f]
        else:
            raise MappingError(f"pattern {target.text!r}: no value for field {f!r} (add it to to_external/to_canonical)")
    return out


def _identity_renames(canonical: CanonicalTable) -> list[RenameRow]:
    return [RenameRow(r.pattern, r.pattern, {}, {}, r.where, r.note) for r in canonical.rows]


def renames_of(table: FormatTable, canonical: CanonicalTable) -> list[RenameRow]:
    return _identity_renames(canonical) if table.identity else table.renames


def _ext_to_can(row: RenameRow, name: str) -> str | None:
    if not name.startswith(row.external.literal_prefix):
        return None
    ext = row.external.match(name)
    if ext is None:
        return None
    can = _other_fields(ext, row.to_canonical, row.canonical)
    if row.where and not evaluate(row.where, can):
        return None
    if _other_fields(can, row.to_external, row.external) != ext:
        return None
    return row.canonical.format(can)


def _can_to_ext(row: RenameRow, name: str) -> str | None:
    if not name.startswith(row.canonical.literal_prefix):
        return None
    can = row.canonical.match(name)
    if can is None or (row.where and not evaluate(row.where, can)):
        return None
    return row.external.format(_other_fields(can, row.to_external, row.external))


def _strip_prefix(name: str, prefixes: tuple[str, ...]) -> tuple[str, str]:
    for p in prefixes:
        if name.startswith(p):
            return p, name[len(p):]
    return "", name


def map_external(names: list[str], table: FormatTable, canonical: CanonicalTable) -> SideMap:
    """Map a store's names (in store order) to canonical groups; collects ignored, unknown and incomplete names."""
    side = SideMap()
    renames = renames_of(table, canonical)
    prefixes_seen: set[str] = set()
    pending: dict[tuple[int, tuple], dict[int, str]] = {}
    pending_order: list[tuple[int, tuple]] = []
    for full in names:
        prefix, name = _strip_prefix(full, table.prefixes)
        prefixes_seen.add(prefix)
        hits = [(row, c) for row in renames if (c := _ext_to_can(row, name)) is not None]
        if len(hits) > 1:
            raise MappingError(f"{table.source}: {name!r} matches several rows: {[h[0].external.text for h in hits]}")
        if hits:
            side.groups.append(Group([full], [hits[0][1]], note=hits[0][0].note))
            continue
        t_hit = None
        for ti, tr in enumerate(table.transforms):
            for pi, pat in enumerate(tr.external):
                vals = pat.match(name)
                if vals is not None:
                    t_hit = (ti, tuple(sorted(vals.items())), pi)
                    break
            if t_hit:
                break
        if t_hit:
            key = t_hit[:2]
            if key not in pending:
                pending[key] = {}
                pending_order.append(key)
            pending[key][t_hit[2]] = full
            continue
        reason = next((ig.reason for ig in table.ignores if ig.matches(name)), None)
        if reason is not None:
            side.ignored.append((full, reason))
        else:
            side.unknown.append(full)
    for key in pending_order:
        tr = table.transforms[key[0]]
        got, vals = pending[key], dict(key[1])
        if len(got) != len(tr.external):
            side.incomplete += [p.format(vals) for i, p in enumerate(tr.external) if i not in got]
            continue
        can_vals = _other_fields(vals, tr.to_canonical, tr.canonical[0]) if tr.canonical[0].fields else {}
        for cp in tr.canonical[1:]:
            can_vals.update(_other_fields(vals, tr.to_canonical, cp))
        side.groups.append(Group([got[i] for i in range(len(tr.external))],
                                 [p.format(can_vals) for p in tr.canonical], transform=tr, note=tr.note))
    nonempty = prefixes_seen - {""}
    if len(prefixes_seen) > 1:
        raise MappingError(f"tensor names mix prefixes {sorted(prefixes_seen)}; expected one prefix for the whole file")
    side.prefix = next(iter(nonempty), "")
    return side


def map_canonical(names: list[str], table: FormatTable, canonical: CanonicalTable, prefix: str = "") -> SideMap:
    """Map canonical names to ``table``'s external names (with ``prefix``); unmapped names land in ``unknown``."""
    if prefix and prefix not in table.prefixes:
        raise MappingError(f"prefix {prefix!r} is not declared for {table.format} ({table.source}): {list(table.prefixes)}")
    side = SideMap(prefix=prefix)
    renames = renames_of(table, canonical)
    present = set(names)
    claimed: set[str] = set()
    for name in names:
        if name in claimed:
            continue
        hits = [(row, e) for row in renames if (e := _can_to_ext(row, name)) is not None]
        if len(hits) > 1:
            raise MappingError(f"{table.source}: canonical {name!r} matches several rows: {[h[0].canonical.text for h in hits]}")
        if hits:
            side.groups.append(Group([prefix + hits[0][1]], [name], note=hits[0][0].note))
            claimed.add(name)
            continue
        for tr in table.transforms:
            vals = next((v for p in tr.canonical if (v := p.match(name)) is not None), None)
            if vals is None or (tr.where and not evaluate(tr.where, vals)):
                continue
            members = [p.format(vals) for p in tr.canonical]
            missing = [m for m in members if m not in present]
            if missing:
                side.incomplete += missing
            else:
                ext_vals: dict[str, int] = {}
                for ep in tr.external:
                    ext_vals.update(_other_fields(vals, tr.to_external, ep))
                side.groups.append(Group([prefix + p.format(ext_vals) for p in tr.external], members,
                                         transform=tr, note=tr.note))
            claimed.update(members)
            break
        else:
            side.unknown.append(name)
    return side
