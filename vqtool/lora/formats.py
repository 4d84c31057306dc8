"""LoRA files in the formats loaders read: Diffusers/PEFT, ComfyUI (kohya keys) and llama.cpp GGUF adapters.

Layers are named by canonical weight name (:class:`LoraLayer`); ``mappings/lora/formats.toml``
says, per format and family, which mapping table renames them, the key prefix and the factor
suffixes. Renames go through the family's mapping tables, so a fused layer in the target naming
(CogVideoX SAT ``query_key_value``) gets one LoRA built from its parts: ``down`` is the parts'
``down`` stacked and ``up`` is the parts' ``up`` placed block-diagonally by the table's own
fuse transform (exact: ``up @ down`` is the fused difference).

Example::

    from vqtool.lora.formats import LoraLayer, write_lora
    write_lora([LoraLayer("blocks.0.self_attn.q.weight", up, down)], "lora.safetensors",
               fmt="comfy", family="wan")
"""

from __future__ import annotations

import functools
import json
import os
import tomllib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vqtool.errors import InputError, MappingError, OutputExistsError

if TYPE_CHECKING:  # pragma: no cover
    import torch

FORMATS = ("diffusers", "comfy", "gguf")
DTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}
# Fuse transforms that act on rows (dim 0) only: the block-diagonal construction is exact for them.
ROW_FUSES = {"cat": {"dim": 0}, "cogvideox.adaln_fuse": {}}


@dataclass
class LoraLayer:
    """One adapted Linear: ``W' = W + up @ down`` (scale 1). ``name`` is the canonical weight name."""

    name: str
    up: "torch.Tensor"  # [out, r]
    down: "torch.Tensor"  # [r, in]

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


@dataclass(frozen=True)
class LoraFormat:
    name: str
    down: str
    up: str
    alpha: str
    keep_weight_suffix: bool
    families: dict[str, tuple[str, str]] = field(default_factory=dict)  # family -> (names, prefix)
    note: str = ""

    def naming(self, family: str) -> tuple[str, str]:
        try:
            return self.families[family]
        except KeyError:
            raise InputError(f"LoRA format {self.name!r} has no naming for {family} "
                             f"(mappings/lora/formats.toml knows {', '.join(self.families)})") from None

    def key(self, layer: str, suffix: str) -> str:
        """The key of factor ``suffix`` for target weight name ``layer`` (prefix not included)."""
        base = layer if self.keep_weight_suffix else layer.removesuffix(".weight")
        return f"{base}.{suffix}"


@functools.lru_cache(maxsize=1)
def load_formats() -> dict[str, LoraFormat]:
    """The LoRA formats of ``mappings/lora/formats.toml``, by name."""
    from vqtool.resources import read_mapping_text

    doc = tomllib.loads(read_mapping_text("lora", "formats.toml"))
    out = {}
    for name, raw in doc["format"].items():
        fams = {k: (v["names"], v.get("prefix", "")) for k, v in raw.items() if isinstance(v, dict)}
        out[name] = LoraFormat(name, raw["down"], raw["up"], raw.get("alpha", ""), raw.get("keep_weight_suffix", False),
                               fams, raw.get("note", ""))
    if set(out) != set(FORMATS):
        raise MappingError(f"mappings/lora/formats.toml declares {sorted(out)}, vqtool writes {list(FORMATS)}")
    return out


def sat_layout() -> dict[str, Any]:
    """The SAT LoraMixin naming (``[sat]`` of ``mappings/lora/formats.toml``)."""
    from vqtool.resources import read_mapping_text

    return dict(tomllib.loads(read_mapping_text("lora", "formats.toml"))["sat"])


def get_format(name: str) -> LoraFormat:
    formats = load_formats()
    if name not in formats:
        raise InputError(f"unknown LoRA format {name!r}; choose one of {', '.join(FORMATS)}")
    return formats[name]


def _target_groups(names: list[str], family: str, table_format: str, all_names: list[str] | None):
    """mapping-engine groups (external, canonical, transform) that hold the LoRA's layers."""
    from vqtool.mapping import load_registry
    from vqtool.mapping.names import Group, map_canonical

    if table_format == "canonical":
        return [Group([n], [n]) for n in names]
    registry = load_registry()
    table = registry.format_for(family, "transformer", table_format)
    canonical = registry.canonical_for(family, "transformer")
    wanted = set(names)
    side = map_canonical(list(dict.fromkeys([*(all_names or []), *names])), table, canonical)
    groups = [g for g in side.groups if wanted & set(g.canonical)]
    claimed = {c for g in groups for c in g.canonical}
    lost = sorted(wanted - claimed)
    if lost:
        raise MappingError(f"{table.source} has no complete name for LoRA layers {lost[:5]}"
                           + (" (pass the model's shapes for fused layers)" if all_names is None else ""))
    return groups


def _fuse(group, layers: dict[str, LoraLayer], shapes: dict[str, tuple[int, ...]] | None) -> list[tuple[str, Any, Any]]:
    """One LoRA per external name of a fused group: stacked ``down``, row-fused block-diagonal ``up``."""
    import torch

    from vqtool.mapping import transforms

    tr = group.transform
    allowed = ROW_FUSES.get(tr.inverse)
    if allowed is None or any(tr.inverse_args.get(k, v) != v for k, v in allowed.items()):
        raise MappingError(f"cannot carry a LoRA through transform {tr.inverse!r} {tr.inverse_args} "
                           f"for {group.canonical}: only row fuses ({', '.join(ROW_FUSES)}) keep it low-rank")
    parts = [layers.get(c) for c in group.canonical]
    ref = next(p for p in parts if p is not None)
    total = sum(p.rank for p in parts if p is not None)
    downs, ups, col = [], [], 0
    for c, p in zip(group.canonical, parts):
        if p is None:
            if not shapes or c not in shapes:
                raise MappingError(f"fused layer {group.external}: no LoRA and no shape for its part {c}")
            ups.append(ref.up.new_zeros(shapes[c][0], total))
            continue
        up = ref.up.new_zeros(p.up.shape[0], total)
        up[:, col:col + p.rank] = p.up
        ups.append(up)
        downs.append(p.down)
        col += p.rank
    down = torch.cat(downs, dim=0)
    fused = transforms.apply(tr.inverse, ups, tr.inverse_args, len(group.external), str(group.canonical))
    return [(ext, f, down) for ext, f in zip(group.external, fused)]


def named_factors(layers: list[LoraLayer], fmt: str, family: str, *,
                  shapes: dict[str, tuple[int, ...]] | None = None) -> list[tuple[str, Any, Any]]:
    """``(target weight name, up, down)`` per output layer, in model order, for ``fmt``'s naming of ``family``.

    ``shapes`` (canonical name -> shape of every model tensor) lets a fused target be written when
    only some of its parts have a LoRA (the others get zero rows).
    """
    lf = get_format(fmt)
    table_format, _ = lf.naming(family)
    by_name = {l.name: l for l in layers}
    if len(by_name) != len(layers):
        raise MappingError("several LoRA layers share one name")
    out = []
    for g in _target_groups(list(by_name), family, table_format, list(shapes) if shapes else None):
        if g.transform is None:
            layer = by_name[g.canonical[0]]
            out.append((g.external[0], layer.up, layer.down))
        else:
            out.extend(_fuse(g, by_name, shapes))
    return out


def cast(t: "torch.Tensor", dtype: str) -> "torch.Tensor":
    """``t`` detached, contiguous, in dtype ``dtype`` ("F32", "F16", "BF16")."""
    from vqtool.io.base import torch_dtype

    return t.detach().to(torch_dtype(dtype)).contiguous()


def check_output(out: str | os.PathLike, fmt: str, overwrite: bool) -> None:
    """Refuse a wrong extension for ``fmt`` or an existing file (without ``overwrite``) before any work."""
    out = os.fspath(out)
    ext = ".gguf" if fmt == "gguf" else ".safetensors"
    if not out.endswith(ext):
        raise InputError(f"a {fmt} LoRA is written as a {ext} file", path=out)
    if os.path.exists(out) and not overwrite:
        raise OutputExistsError("exists; pass --overwrite to replace it", path=out)


def _write_safetensors(tensors: dict[str, "torch.Tensor"], out: str, metadata: dict[str, str], overwrite: bool) -> None:
    from vqtool.io.base import dtype_name
    from vqtool.mapping.plan import PlannedTensor
    from vqtool.mapping.writer import write_tensors

    planned = [PlannedTensor(k, tuple(v.shape), dtype_name(v.dtype), ()) for k, v in tensors.items()]
    write_tensors(iter(tensors.items()), planned, out, max_shard_size=1 << 62, overwrite=overwrite,
                  metadata=metadata, progress=False)


def _peft_metadata(ranks: dict[str, int]) -> str:
    """diffusers' ``lora_adapter_metadata``: an explicit LoraConfig with lora_alpha = r for every module."""
    import collections
    import re

    r = collections.Counter(ranks.values()).most_common(1)[0][0] if ranks else 1
    pattern = {re.escape(m): v for m, v in ranks.items() if v != r}
    config = {"r": r, "lora_alpha": r, "rank_pattern": pattern, "alpha_pattern": dict(pattern),
              "target_modules": sorted(ranks), "use_dora": False, "lora_bias": False}
    return json.dumps({f"transformer.{k}": v for k, v in config.items()}, indent=2, sort_keys=True)


def write_lora(layers: list[LoraLayer], out: str | os.PathLike, *, fmt: str, family: str,
               shapes: dict[str, tuple[int, ...]] | None = None, dtype: str = "bf16",
               metadata: dict[str, str] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Write ``layers`` (scale-1 LoRA layers, canonical names) as a ``fmt`` file of ``family``.

    Atomic: the file appears complete or not at all; an existing file is replaced only with
    ``overwrite``. ``metadata`` (strings) goes into the safetensors header or the GGUF KV
    (``vqtool.*`` keys). Returns ``{"path", "format", "layers", "tensors", "bytes", "ranks"}``.
    """
    out = os.fspath(out)
    lf = get_format(fmt)
    if dtype not in DTYPES:
        raise InputError(f"unknown LoRA dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    st_dtype = DTYPES[dtype]
    check_output(out, fmt, overwrite)
    _, prefix = lf.naming(family)
    named = named_factors(layers, fmt, family, shapes=shapes)
    if not named:
        raise InputError("no LoRA layers to write (nothing changed above the threshold?)", path=out)
    ranks = {name: int(down.shape[0]) for name, _, down in named}
    if fmt == "gguf":
        _write_gguf(named, out, lf, family, st_dtype, metadata or {}, overwrite)
    else:
        tensors: dict[str, torch.Tensor] = {}
        for name, up, down in named:
            tensors[prefix + lf.key(name, lf.down)] = cast(down, st_dtype)
            tensors[prefix + lf.key(name, lf.up)] = cast(up, st_dtype)
            if lf.alpha:
                import torch

                # alpha = rank: scale 1 under the kohya / ComfyUI rule alpha / rank
                tensors[prefix + lf.key(name, lf.alpha)] = torch.tensor(float(down.shape[0]), dtype=torch.float32)
        meta = dict(metadata or {})
        if fmt == "diffusers":
            meta["lora_adapter_metadata"] = _peft_metadata(
                {name.removesuffix(".weight"): r for name, r in ranks.items()})
        _write_safetensors(tensors, out, meta, overwrite)
    return {"path": out, "format": fmt, "layers": len(named), "tensors": len(named) * (2 + bool(lf.alpha)),
            "bytes": os.path.getsize(out), "ranks": ranks}


def _write_gguf(named, out: str, lf: LoraFormat, family: str, dtype: str, metadata: dict[str, str],
                overwrite: bool) -> None:
    import collections

    import torch

    from vqtool.quant.gguf_out import GGUFOut
    from vqtool.quant.run import ARCHITECTURES
    from vqtool.quant.types import nbytes

    alpha = collections.Counter(int(d.shape[0]) for _, _, d in named).most_common(1)[0][0]
    g = GGUFOut(out, ARCHITECTURES.get(family, family), overwrite=overwrite)
    try:
        g.add("general.type", "adapter")
        g.add("adapter.type", "lora")
        g.add("adapter.lora.alpha", float(alpha))
        for key, value in metadata.items():
            g.add(key if key.startswith("vqtool.") else f"vqtool.{key}", str(value))
        tensors = []
        for name, up, down in named:
            # llama.cpp applies alpha / r per tensor: pre-scale up so that every layer has scale 1
            up = up * (down.shape[0] / alpha)
            tensors += [(lf.key(name, lf.down), down), (lf.key(name, lf.up), up)]
        for key, t in tensors:
            g.add_tensor(key, tuple(t.shape), dtype, nbytes(dtype, tuple(t.shape)))
        g.open()
        for key, t in tensors:
            t = cast(t, dtype)
            g.write_tensor(key, (t.view(torch.int16) if dtype == "BF16" else t).numpy())
        g.commit()
    except BaseException:
        g.abort()
        raise
