"""Load the mapping tables under ``mappings/`` into a registry that rejects duplicates.

Two kinds of TOML file live in ``mappings/<family>/`` (``policies/`` is skipped):

**Canonical table** (``kind = "canonical"``, e.g. ``wan/transformer.toml``)::

    kind = "canonical"; family = "wan"; component = "transformer"
    variant = "kind + '-' + size"            # expression over [config] and `kind`
    [[kinds]]                                # first whose keys all exist (canonical names) wins
    name = "vace"; keys = ["vace_patch_embedding.weight"]
    [config]                                 # evaluated in order; shape(n), has(n), count(p), indices(p)
    dim = "shape('patch_embedding.weight')[0]"
    [[tensor]]                               # one row per canonical pattern
    pattern = "blocks.{i}.self_attn.q"       # integer fields in braces
    suffixes = ["weight", "bias"]            # optional: one row per suffix
    role = "attn.self.q"                     # vqtool.graph.Role vocabulary
    block = "main"                           # optional block kind (main / vace); index field `i` (block_field)
    kinds = ["i2v"]                          # optional: only expected for these kinds
    where = "i == 0"                         # optional filter over the fields
    values = { n = [0, 1, 3] }               # optional fixed field values (else block fields: 0..max seen)

Every expected name (rows x kinds x block range x values, filtered by ``where``) must be present:
missing ones are an error that lists them.

**Format table** (``kind = "format"``, e.g. ``wan/transformer.diffusers.toml``)::

    kind = "format"; family = "wan"; component = "transformer"; format = "diffusers"
    identity = false                         # true: external names are the canonical names
    prefixes = ["model.diffusion_model."]    # optional, stripped by prefix match
    aliases = ["diffusers"]                  # optional other --to names for this table
    [detect]                                 # any key-set all present, none of banned (prefixes allowed)
    keys = [["scale_shift_table", "condition_embedder.time_proj.weight"]]
    banned = ["head.modulation"]
    [output]
    basename = "diffusion_pytorch_model"
    [config_json]                            # written as config.json; expressions over the canonical config
    [config_from_json]                       # canonical config key <- expression over the source config.json
    [[rename]]
    canonical = "decoder.upsamples.{n}.residual.2"
    external = "decoder.up_blocks.{b}.resnets.{r}.conv1"
    suffixes = ["weight", "bias"]
    to_external = { b = "n // 4", r = "n % 4" }   # index arithmetic, both ways (checked to round-trip)
    to_canonical = { n = "4 * b + r" }
    where = "n % 4 != 3"                     # over canonical fields
    [[transform]]                            # see vqtool.mapping.transforms
    fn = "chunk"; args = { parts = 3, dim = 0 }; inverse = "cat"; inverse_args = { dim = 0 }
    external = ["...query_key_value.weight"]; canonical = ["...to_q.weight", "...to_k.weight", "...to_v.weight"]
    [[ignore]]                               # external names dropped on import, with a reason
    pattern = "encoder.embed_tokens.weight"; reason = "tied to shared.weight"

Every row may carry a ``note`` (where the fact comes from). Bad tables fail at load time, naming
the file.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field
from typing import Any

from vqtool.errors import MappingError
from vqtool.graph import BLOCK_KINDS, Role
from vqtool.mapping.patterns import Pattern

# Folders under mappings/ that hold other data (quantization policies, LoRA naming), not mapping tables.
NON_MAPPING_DIRS = frozenset({"policies", "lora"})


@dataclass(frozen=True)
class TensorRow:
    """One canonical tensor pattern (a ``[[tensor]]`` row)."""

    pattern: Pattern
    role: Role
    block_kind: str | None
    block_field: str
    kinds: tuple[str, ...] | None
    where: str | None
    values: dict[str, tuple[int, ...]]
    note: str


@dataclass(frozen=True)
class RenameRow:
    """A one-to-one rename between a canonical and an external pattern."""

    canonical: Pattern
    external: Pattern
    to_external: dict[str, str]
    to_canonical: dict[str, str]
    where: str | None
    note: str


@dataclass(frozen=True)
class TransformRow:
    """A many-to-many group: ``fn`` maps external inputs to canonical outputs, ``inverse`` back."""

    fn: str
    args: dict[str, Any]
    inverse: str
    inverse_args: dict[str, Any]
    external: tuple[Pattern, ...]
    canonical: tuple[Pattern, ...]
    to_external: dict[str, str]
    to_canonical: dict[str, str]
    where: str | None
    note: str


@dataclass(frozen=True)
class IgnoreRow:
    pattern: Pattern
    reason: str
    is_prefix: bool = False

    def matches(self, name: str) -> bool:
        return name.startswith(self.pattern.text) if self.is_prefix else self.pattern.match(name) is not None


@dataclass
class CanonicalTable:
    family: str
    component: str
    source: str
    rows: list[TensorRow]
    kinds: list[tuple[str, tuple[str, ...]]]
    config: dict[str, str]
    variant: str
    note: str = ""


@dataclass
class FormatTable:
    family: str
    component: str
    format: str
    source: str
    prefixes: tuple[str, ...]
    identity: bool
    detect_keys: tuple[tuple[str, ...], ...]
    detect_banned: tuple[str, ...]
    renames: list[RenameRow]
    transforms: list[TransformRow]
    ignores: list[IgnoreRow]
    config_json: dict[str, Any] | None
    config_from_json: dict[str, str]
    basename: str
    note: str = ""
    aliases: tuple[str, ...] = ()  # other --to names that select this table (e.g. "diffusers" for transformers)
    # key -> expression over the derived config and has_source(name) (the source's own names, prefix
    # stripped); evaluated after the canonical [config] (e.g. SAT leftovers that mark a rotary model).
    config_from_names: dict[str, str] = field(default_factory=dict)


@dataclass
class Registry:
    """Every canonical and format table, keyed by (family, component[, format])."""

    canonical: dict[tuple[str, str], CanonicalTable] = field(default_factory=dict)
    formats: dict[tuple[str, str, str], FormatTable] = field(default_factory=dict)

    def add(self, table: CanonicalTable | FormatTable) -> None:
        if isinstance(table, CanonicalTable):
            key: tuple = (table.family, table.component)
            store: dict = self.canonical
        else:
            key = (table.family, table.component, table.format)
            store = self.formats
        if key in store:
            raise MappingError(f"duplicate mapping table {key}: {store[key].source} and {table.source}")
        store[key] = table

    def canonical_for(self, family: str, component: str) -> CanonicalTable:
        try:
            return self.canonical[(family, component)]
        except KeyError:
            raise MappingError(f"no canonical table for family {family!r}, component {component!r}") from None

    def format_for(self, family: str, component: str, fmt: str) -> FormatTable:
        if (family, component, fmt) in self.formats:
            return self.formats[(family, component, fmt)]
        aliased = [t for (fa, c, _), t in self.formats.items() if fa == family and c == component and fmt in t.aliases]
        if len(aliased) == 1:
            return aliased[0]
        else:
            known = sorted(f for (fa, c, f) in self.formats if fa == family and c == component)
            raise MappingError(
                f"no {fmt!r} mapping for {family} {component}; known formats: {', '.join(known) or 'none'}"
            ) from None


def _expand(pattern: str, suffixes: list[str] | None) -> list[str]:
    return [f"{pattern}.{s}" for s in suffixes] if suffixes else [pattern]


def _require(doc: dict, key: str, source: str) -> Any:
    if key not in doc:
        raise MappingError(f"mapping table {source}: missing required key {key!r}")
    return doc[key]


def _parse_canonical(doc: dict, source: str) -> CanonicalTable:
    rows = []
    for raw in doc.get("tensor", []):
        block = raw.get("block")
        if block is not None and block not in BLOCK_KINDS:
            raise MappingError(f"{source}: row {raw.get('pattern')!r}: block kind {block!r} is not one of {BLOCK_KINDS}")
        try:
            role = Role.parse(_require(raw, "role", source))
        except ValueError as exc:
            raise MappingError(f"{source}: row {raw.get('pattern')!r}: {exc}") from None
        for text in _expand(_require(raw, "pattern", source), raw.get("suffixes")):
            rows.append(TensorRow(
                pattern=Pattern(text), role=role, block_kind=block, block_field=raw.get("block_field", "i"),
                kinds=tuple(raw["kinds"]) if "kinds" in raw else None, where=raw.get("where"),
                values={k: tuple(v) for k, v in raw.get("values", {}).items()}, note=raw.get("note", ""),
            ))
    kinds = [(k["name"], tuple(k.get("keys", []))) for k in doc.get("kinds", [])] or [("default", ())]
    return CanonicalTable(
        family=_require(doc, "family", source), component=_require(doc, "component", source), source=source,
        rows=rows, kinds=kinds, config=dict(doc.get("config", {})), variant=doc.get("variant", "kind"),
        note=doc.get("note", ""),
    )


def _parse_format(doc: dict, source: str) -> FormatTable:
    renames = []
    for raw in doc.get("rename", []):
        can, ext = _require(raw, "canonical", source), _require(raw, "external", source)
        for c, e in zip(_expand(can, raw.get("suffixes")), _expand(ext, raw.get("suffixes"))):
            renames.append(RenameRow(
                canonical=Pattern(c), external=Pattern(e), to_external=dict(raw.get("to_external", {})),
                to_canonical=dict(raw.get("to_canonical", {})), where=raw.get("where"), note=raw.get("note", ""),
            ))
    transforms = []
    for raw in doc.get("transform", []):
        transforms.append(TransformRow(
            fn=_require(raw, "fn", source), args=dict(raw.get("args", {})),
            inverse=_require(raw, "inverse", source), inverse_args=dict(raw.get("inverse_args", {})),
            external=tuple(Pattern(p) for p in _require(raw, "external", source)),
            canonical=tuple(Pattern(p) for p in _require(raw, "canonical", source)),
            to_external=dict(raw.get("to_external", {})), to_canonical=dict(raw.get("to_canonical", {})),
            where=raw.get("where"), note=raw.get("note", ""),
        ))
    # An ignore row names one pattern, or (``prefix = "loss."``) every name under a prefix.
    ignores = [IgnoreRow(Pattern(r["prefix"] if "prefix" in r else _require(r, "pattern", source)),
                         _require(r, "reason", source), "prefix" in r)
               for r in doc.get("ignore", [])]
    detect = doc.get("detect", {})
    keys = detect.get("keys", [])
    if keys and isinstance(keys[0], str):
        keys = [keys]
    return FormatTable(
        family=_require(doc, "family", source), component=_require(doc, "component", source),
        format=_require(doc, "format", source), source=source, prefixes=tuple(doc.get("prefixes", [])),
        identity=bool(doc.get("identity", False)), detect_keys=tuple(tuple(k) for k in keys),
        detect_banned=tuple(detect.get("banned", [])), renames=renames, transforms=transforms, ignores=ignores,
        config_json=doc.get("config_json"), config_from_json=dict(doc.get("config_from_json", {})),
        basename=doc.get("output", {}).get("basename", "model"), aliases=tuple(doc.get("aliases", [])),
        note=doc.get("note", ""),
        config_from_names=dict(doc.get("config_from_names", {})),
    )


def parse_table(text: str, source: str) -> CanonicalTable | FormatTable:
    """Parse one TOML mapping table; ``source`` names it in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"mapping table {source} is not valid TOML: {exc}") from None
    kind = doc.get("kind")
    if kind == "canonical":
        return _parse_canonical(doc, source)
    if kind == "format":
        return _parse_format(doc, source)
    raise MappingError(f"mapping table {source}: 'kind' must be \"canonical\" or \"format\", got {kind!r}")


def _import_family_transforms(families: list[str]) -> None:
    """Import ``vqtool.mapping.<family>`` where it exists: family-specific transforms register there."""
    import importlib
    import importlib.util

    for family in sorted(families):
        if family.isidentifier() and importlib.util.find_spec(f"vqtool.mapping.{family}") is not None:
            importlib.import_module(f"vqtool.mapping.{family}")


@functools.lru_cache(maxsize=1)
def load_registry() -> Registry:
    """Every table under ``mappings/<family>/*.toml`` (policies excluded), loaded once."""
    from vqtool.resources import mappings_dir

    registry = Registry()
    root = mappings_dir()
    _import_family_transforms([f.name for f in root.iterdir() if f.is_dir()])
    for folder in sorted(root.iterdir(), key=lambda p: p.name):
        if not folder.is_dir() or folder.name in NON_MAPPING_DIRS or folder.name.startswith(("_", ".")):
            continue
        for item in sorted(folder.iterdir(), key=lambda p: p.name):
            if item.name.endswith(".toml"):
                registry.add(parse_table(item.read_text(encoding="utf-8"), f"mappings/{folder.name}/{item.name}"))
    for (family, component, fmt), table in registry.formats.items():
        if (family, component) not in registry.canonical:
            raise MappingError(f"{table.source}: no canonical table for {family} {component}")
    return registry
