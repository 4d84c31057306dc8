"""``vqtool lora export-sat``: a CogVideoX SAT LoRA checkpoint -> a Diffusers/PEFT (or ComfyUI, GGUF) LoRA.

SAT's ``LoraMixin`` (reference checkpoint-formats.md §2) wraps a Linear ``M`` as
``M.original.{weight,bias}`` plus, per output partition j, ``M.matrix_A.{j}`` [r, in] and
``M.matrix_B.{j}`` [out / P, r]; its forward adds ``(x A_j^T) B_j^T * alpha / r`` to output
chunk j. The wrapped modules are found by name, whatever their number (CogVideo's
``tools/export_sat_lora_weight.py`` insists on exactly 240 tensors, i.e. 30 layers, and so
refuses the 42-layer 5B models), and mapped to Diffusers through vqtool's SAT table: the
partitions of ``query_key_value`` are the table's chunk(3) parts ``to_q``, ``to_k``, ``to_v``;
``dense`` is ``to_out.0``.

**Scaling.** SAT does not save ``lora_alpha`` (default 1) and scales by alpha / r. vqtool
*folds* alpha / r into ``lora_B`` (``up``) and writes a scale-1 LoRA, so diffusers'
``load_lora_weights`` reproduces the SAT model with no ``set_adapters`` weight (CogVideo's
``tools/load_cogvideox_lora.py`` compensates with ``set_adapters(..., [alpha / r])``; do not
combine that with a vqtool file). Pass ``alpha`` if training used another ``lora_alpha``.

Example::

    from vqtool.lora.export_sat import export_sat
    export_sat("CogVideoX-5b-sat-lora/", "pytorch_lora_weights.safetensors")
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from typing import Any

from vqtool.errors import InputError, MappingError
from vqtool.lora.formats import LoraLayer, check_output, sat_layout, write_lora

log = logging.getLogger(__name__)

FAMILY = "cogvideox"


def _parse(names: list[str], layout: dict[str, Any]) -> tuple[dict[str, dict[str, dict[int, str]]], list[tuple[str, str]]]:
    """Module -> {"A": {j: key}, "B": {j: key}}, and the keys that are not LoRA factors (with why)."""
    prefix = layout["prefix"]
    factor = re.compile(rf"^(?P<module>.+)\.(?P<which>{re.escape(layout['down'])}|{re.escape(layout['up'])})\.(?P<j>\d+)$")
    base_marker = f".{layout['base']}."
    modules: dict[str, dict[str, dict[int, str]]] = defaultdict(lambda: {"A": {}, "B": {}})
    other: list[tuple[str, str]] = []
    for key in names:
        short = key.removeprefix(prefix)
        m = factor.match(short)
        if m:
            which = "A" if m["which"] == layout["down"] else "B"
            modules[m["module"]][which][int(m["j"])] = key
        elif base_marker in short:
            other.append((key, "base weight of a LoRA-wrapped layer (SAT LoraMixin .original)"))
        else:
            other.append((key, "base model tensor, not part of the LoRA"))
    return dict(modules), other


def _targets(modules: list[str]) -> dict[str, tuple[list[str], Any]]:
    """SAT module -> (canonical weight names of its output partitions, transform row or None)."""
    from vqtool.mapping import load_registry
    from vqtool.mapping.names import map_external

    registry = load_registry()
    table = registry.format_for(FAMILY, "transformer", "sat")
    side = map_external([f"{m}.weight" for m in modules], table, registry.canonical_for(FAMILY, "transformer"))
    if side.unknown or side.incomplete:
        raise MappingError(f"SAT LoRA on layers that {table.source} does not know: "
                           f"{[n.removesuffix('.weight') for n in side.unknown + side.incomplete][:10]}")
    out = {}
    for g in side.groups:
        module = g.external[0].removesuffix(".weight")
        if g.transform is not None and g.transform.fn != "chunk":
            raise MappingError(f"SAT LoRA on {module}: its weight is split by {g.transform.fn!r}, not into equal "
                               "output chunks; vqtool cannot map its partitions")
        out[module] = (g.canonical, g.transform)
    return out


def sat_lora_layers(store, *, alpha: float | None = None) -> tuple[list[LoraLayer], dict[str, Any]]:
    """The scale-1 LoRA layers (canonical Diffusers names) of a SAT LoRA store, and a summary."""
    layout = sat_layout()
    alpha = float(layout["default_alpha"] if alpha is None else alpha)
    modules, other = _parse(store.keys(), layout)
    if not modules:
        raise InputError(f"no SAT LoRA tensors (*.{layout['down']}.N / *.{layout['up']}.N) here; "
                         "is this a SAT LoRA checkpoint?", path=store.path)
    targets = _targets(sorted(modules))
    layers: list[LoraLayer] = []
    ranks: set[int] = set()
    for module in sorted(modules, key=_natural):
        parts = modules[module]
        canonical, _ = targets[module]
        if sorted(parts["A"]) != sorted(parts["B"]) or sorted(parts["A"]) != list(range(len(canonical))):
            raise MappingError(f"SAT LoRA layer {module}: matrix_A parts {sorted(parts['A'])} and matrix_B parts "
                               f"{sorted(parts['B'])}; expected 0..{len(canonical) - 1} (one per output partition)",
                               path=store.path)
        for j, name in enumerate(canonical):
            a, b = store.read(parts["A"][j]), store.read(parts["B"][j])
            if a.ndim != 2 or b.ndim != 2 or b.shape[1] != a.shape[0]:
                raise MappingError(f"matrix_A {tuple(a.shape)} and matrix_B {tuple(b.shape)} do not chain",
                                   path=store.path, tensor=parts["A"][j])
            r = int(a.shape[0])
            ranks.add(r)
            scale = alpha / r
            layers.append(LoraLayer(name, (b.float() * scale).to(b.dtype), a))
    summary = {"modules": len(modules), "layers": len(layers), "ranks": sorted(ranks), "alpha": alpha,
               "scale_folded": {str(r): alpha / r for r in sorted(ranks)},
               "ignored": len(other), "ignored_reasons": sorted({why for _, why in other})}
    return layers, summary


def _natural(name: str) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def export_sat(src: str | os.PathLike, out: str | os.PathLike, *, alpha: float | None = None,
               fmt: str = "diffusers", dtype: str = "auto", overwrite: bool = False,
               dry_run: bool = False) -> dict[str, Any]:
    """Convert the SAT LoRA in ``src`` (a SAT folder or its ``mp_rank_00_model_states.pt``) to ``out``.

    ``alpha``: SAT's ``lora_alpha`` (default 1, SAT's default); alpha / r is folded into ``lora_B``.
    ``dtype``: "auto" keeps the checkpoint's (f32 / f16 / bf16), else one of those.
    Returns a JSON-ready summary (layers, ranks, folded scale, what was left out and why).
    """
    from vqtool.io import open_store
    from vqtool.io.base import dtype_name

    if not dry_run:
        check_output(out, fmt, overwrite)
    with open_store(src) as store:
        layers, summary = sat_lora_layers(store, alpha=alpha)
        if dtype == "auto":
            dtype = {"F32": "f32", "F16": "f16", "BF16": "bf16"}.get(dtype_name(layers[0].down.dtype), "f32")
        result = {"source": os.fspath(src), "output": os.fspath(out), "format": fmt, "dtype": dtype, **summary}
        log.info("%s: %d SAT LoRA modules -> %d layers, rank %s, alpha %s", src, summary["modules"],
                 summary["layers"], summary["ranks"], summary["alpha"])
        if dry_run:
            result["layers_planned"] = [{"name": l.name, "rank": l.rank, "shape": [l.up.shape[0], l.down.shape[1]]}
                                        for l in layers]
            return result
        meta = {"vqtool.lora.source": os.path.basename(os.path.normpath(os.fspath(src))),
                "vqtool.lora.sat_alpha": str(summary["alpha"]),
                "vqtool.lora.scale": "1 (SAT alpha / r folded into lora_B)", "vqtool.family": FAMILY}
        result["written"] = write_lora(layers, os.fspath(out), fmt=fmt, family=FAMILY, dtype=dtype,
                                       metadata=meta, overwrite=overwrite)
    return result
