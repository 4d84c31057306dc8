"""``vqtool lora extract``: a LoRA from the difference between a fine-tuned model and its base.

For every Linear weight (every 2-D ``.weight`` of the canonical graph; Wan and CogVideoX have
no other 2-D weights) the difference ``tuned - base`` is factored by truncated SVD
(:mod:`vqtool.lora.factors`) at a fixed rank or a rank chosen per layer by retained energy or
by a singular-value ratio, optionally with kohya-style outlier clamping. Tensors a LoRA cannot
carry (biases, norms, modulation tables, convolutions) are compared too: any that changed are
listed in the report, never dropped silently.

Both inputs may be in any format vqtool reads (they need not match: a Diffusers base and a
ComfyUI fine-tune is fine); they are read one canonical tensor pair at a time.

Example::

    from vqtool.lora.extract import extract
    result = extract("Wan2.1-T2V-1.3B/", "my-finetune.safetensors", "lora.safetensors", energy=0.9, max_rank=64)
    for row in result["layers"]:
        print(row["name"], row["rank"], row["energy"])
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from collections import defaultdict
from typing import Any

from vqtool.errors import DetectionError, InputError, MappingError
from vqtool.lora.factors import RankRule, low_rank
from vqtool.lora.formats import DTYPES, LoraLayer, cast, check_output, get_format, write_lora

log = logging.getLogger(__name__)


class CanonicalReader:
    """Read a store's tensors by canonical name, one mapping group at a time (parts kept until asked for)."""

    def __init__(self, store, ident) -> None:
        self.store = store
        self.group_of = {c: g for g in ident.side.groups for c in g.canonical}
        self._pending: dict[str, Any] = {}

    def read(self, name: str):
        from vqtool.mapping import transforms

        if name not in self._pending:
            g = self.group_of[name]
            ins = [self.store.read(n) for n in g.external]
            outs = ins if g.transform is None else transforms.apply(
                g.transform.fn, ins, g.transform.args, len(g.canonical), str(g.external))
            self._pending.update(zip(g.canonical, outs))
        return self._pending.pop(name)


def is_linear_weight(t) -> bool:
    """A weight a LoRA can adapt: a 2-D ``.weight`` (every one is an nn.Linear in Wan and CogVideoX)."""
    return len(t.shape) == 2 and t.name.endswith(".weight")


def selected(name: str, role: str, include: list[str], exclude: list[str]) -> bool:
    """``include`` / ``exclude``: canonical-name globs or ``role:ROLE`` (globs too, e.g. ``role:attn.*``)."""
    def hit(pattern: str) -> bool:
        if pattern.startswith("role:"):
            return fnmatch.fnmatchcase(role, pattern[5:])
        return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name.removesuffix(".weight"), pattern)

    return (not include or any(hit(p) for p in include)) and not any(hit(p) for p in exclude)


def _identify(store, what: str):
    from vqtool.mapping import identify

    ident = identify(store)
    if ident is None:
        raise DetectionError(f"{what}: no mapping table recognises its tensor names; run `vqtool inspect` on it",
                             path=store.path)
    ident.check(f"{what} {store.path}")
    if ident.graph.component != "transformer":
        raise InputError(f"{what} is a {ident.graph.family} {ident.graph.component}; LoRAs adapt the transformer",
                         path=store.path)
    return ident


def _check_pair(base, tuned) -> None:
    gb, gt = base.graph, tuned.graph
    if gb.family != gt.family:
        raise MappingError(f"the base is {gb.family} but the tuned model is {gt.family}")
    b = {t.name: t.shape for t in gb}
    t = {x.name: x.shape for x in gt}
    only_b, only_t = sorted(set(b) - set(t)), sorted(set(t) - set(b))
    shapes = sorted(n for n in set(b) & set(t) if tuple(b[n]) != tuple(t[n]))
    if only_b or only_t or shapes:
        parts = []
        if only_b:
            parts.append(f"only in the base: {only_b[:5]}")
        if only_t:
            parts.append(f"only in the tuned model: {only_t[:5]}")
        if shapes:
            parts.append(f"shapes differ: {[(n, list(b[n]), list(t[n])) for n in shapes[:5]]}")
        raise MappingError(f"base ({gb.variant}) and tuned model ({gt.variant}) are not the same architecture: "
                           + "; ".join(parts))


def _by_role(rows: list[dict]) -> dict[str, dict]:
    acc: dict[str, dict] = defaultdict(lambda: {"layers": 0, "rank_sum": 0, "diff2": 0.0, "kept2": 0.0})
    for r in rows:
        a = acc[r["role"]]
        a["layers"] += 1
        a["rank_sum"] += r["rank"]
        a["diff2"] += r["diff_norm"] ** 2
        a["kept2"] += r["diff_norm"] ** 2 * r["energy"]
    return {role: {"layers": a["layers"], "mean_rank": round(a["rank_sum"] / a["layers"], 2),
                   "energy": round(a["kept2"] / a["diff2"], 6) if a["diff2"] else 1.0}
            for role, a in sorted(acc.items())}


def extract(base: str | os.PathLike, tuned: str | os.PathLike, out: str | os.PathLike | None, *,
            rank: int | None = None, energy: float | None = None, ratio: float | None = None,
            max_rank: int | None = None, clamp_quantile: float | None = None, min_diff: float = 0.0,
            fmt: str = "diffusers", dtype: str = "bf16", include: list[str] = (), exclude: list[str] = (),
            component: str | None = None, device: str | None = None, dry_run: bool = False,
            overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Extract a LoRA ``tuned - base`` into ``out`` (format ``fmt``: diffusers, comfy or gguf).

    Rank: exactly one of ``rank``, ``energy`` (fraction of the difference's squared Frobenius
    norm to keep), ``ratio`` (keep singular values above ``ratio`` x the largest); ``max_rank``
    caps the last two. ``clamp_quantile`` (e.g. 0.99) clips both factors at that quantile of their
    absolute values. Layers whose relative difference ||dW|| / ||W|| is at most ``min_diff`` are
    left out (reported as unchanged); other tensors that changed by more than ``min_diff`` are
    listed as not carried. ``dry_run``: identify and pair the models, list the layers,
    read no tensor data. Returns a JSON-ready report (per layer: rank, retained energy, relative
    error, relative size of the difference; per role; tensors that changed but are not carried).
    """
    import torch
    from tqdm import tqdm

    from vqtool.io import open_store
    from vqtool.mapping import convert_to_canonical

    rule = RankRule(rank=rank, energy=energy, ratio=ratio, max_rank=max_rank)
    if clamp_quantile is not None and not 0.5 < clamp_quantile <= 1.0:
        raise InputError(f"--clamp-quantile is a quantile in (0.5, 1], got {clamp_quantile}")
    get_format(fmt)
    if not dry_run:
        if out is None:
            raise InputError("give an output file with -o")
        check_output(out, fmt, overwrite)
    with open_store(base, component) as bstore, open_store(tuned, component) as tstore:
        bid, tid = _identify(bstore, "base"), _identify(tstore, "tuned model")
        _check_pair(bid, tid)
        graph = bid.graph
        targets = [t for t in graph if is_linear_weight(t) and selected(t.name, t.role.value, list(include), list(exclude))]
        result: dict[str, Any] = {
            "base": os.fspath(base), "tuned": os.fspath(tuned), "output": os.fspath(out) if out else None,
            "family": graph.family, "variant": graph.variant, "format": fmt, "rule": rule.describe(),
            "dry_run": dry_run,
        }
        if dry_run:
            result["layers"] = [{"name": t.name, "role": t.role.value, "shape": list(t.shape)} for t in targets]
            return result
        target_names = {t.name for t in targets}
        infos = {t.name: t for t in graph}
        reader = CanonicalReader(tstore, tid)
        layers: list[LoraLayer] = []
        rows: list[dict] = []
        unchanged: list[str] = []
        not_carried: list[dict] = []
        bar = tqdm(total=len(graph), unit="tensor", desc="extract", disable=not progress, leave=False)
        for name, b in convert_to_canonical(bstore):
            t = reader.read(name)
            info = infos[name]
            if name in target_names:
                b32 = b.to(device or "cpu", torch.float32)
                delta = t.to(b32.device, torch.float32) - b32
                norm = float(torch.linalg.matrix_norm(b32)) or 1.0
                rel = float(torch.linalg.matrix_norm(delta)) / norm
                if rel <= min_diff:
                    unchanged.append(name)
                else:
                    f = low_rank(delta, rule, clamp_quantile=clamp_quantile, name=name, reference_norm=norm)
                    if f.rank:
                        layers.append(LoraLayer(name, cast(f.up.cpu(), DTYPES[dtype]), cast(f.down.cpu(), DTYPES[dtype])))
                    rows.append({"name": name, "role": info.role.value, **f.stats})
                del b32, delta
            elif not torch.equal(b, t.to(b.dtype)):
                change = float((t.float() - b.float()).norm() / (b.float().norm() or 1.0))
                if change > min_diff:
                    why = "excluded by --include/--exclude" if is_linear_weight(info) else "not a Linear weight"
                    not_carried.append({"name": name, "role": info.role.value, "rel_diff": change, "reason": why})
            bar.update(1)
            del b, t
        bar.close()
        if not_carried:
            log.warning("%d changed tensors are not in the LoRA (%s), e.g. %s", len(not_carried),
                        ", ".join(sorted({r["reason"] for r in not_carried})), not_carried[0]["name"])
        result.update(layers=rows, by_role=_by_role(rows), unchanged=unchanged, not_carried=not_carried)
        meta = {"vqtool.lora.base": os.path.basename(os.path.normpath(os.fspath(base))),
                "vqtool.lora.tuned": os.path.basename(os.path.normpath(os.fspath(tuned))),
                "vqtool.lora.rule": rule.describe(), "vqtool.family": graph.family, "vqtool.variant": graph.variant,
                "vqtool.lora.scale": "1 (alpha folded into the factors)",
                "vqtool.lora.energy": json.dumps({r["name"]: round(r["energy"], 6) for r in rows}, sort_keys=True)}
        shapes = {t.name: tuple(t.shape) for t in graph}
        result["written"] = write_lora(layers, os.fspath(out), fmt=fmt, family=graph.family, shapes=shapes,
                                       dtype=dtype, metadata=meta, overwrite=overwrite)
    return result


def render_report(result: dict[str, Any], per_layer: bool = True) -> str:
    """The extraction report as text: per layer (rank, retained energy, error) and per role."""
    lines = [f"{result['family']} {result['variant']}: {len(result['layers'])} layers, {result['rule']}, "
             f"format {result['format']}"]
    if per_layer and result["layers"]:
        w = max(len(r["name"]) for r in result["layers"])
        lines.append(f"  {'layer':<{w}}  {'shape':>11}  {'rank':>4}  {'energy':>8}  {'rel.err':>8}  {'|dW|/|W|':>9}")
        for r in result["layers"]:
            shape = "x".join(map(str, r["shape"]))
            lines.append(f"  {r['name']:<{w}}  {shape:>11}  {r['rank']:>4}  {r['energy']:>8.4f}  "
                         f"{r['rel_error']:>8.4f}  {r.get('rel_diff', 0.0):>9.2e}")
    lines.append("  by role:")
    for role, v in result["by_role"].items():
        lines.append(f"    {role:<16} {v['layers']:>4} layers  mean rank {v['mean_rank']:>7}  energy {v['energy']:.4f}")
    if result["unchanged"]:
        lines.append(f"  unchanged (left out): {len(result['unchanged'])} layers")
    for r in result["not_carried"]:
        lines.append(f"  NOT IN THE LORA: {r['name']} changed by {r['rel_diff']:.2e} ({r['reason']})")
    w = result.get("written")
    if w:
        lines.append(f"wrote {w['path']}: {w['layers']} layers, {w['tensors']} tensors, {w['bytes']} bytes")
    return "\n".join(lines)
