"""Quantization-recovery adapters: a LoRA approximating ``W - dequant(quant(W))`` per quantized Linear.

``vqtool quantize --recovery-rank R`` feeds every encoded tensor to a :class:`RecoveryBuilder`
(one per output file); for each block-quantized 2-D weight it decodes the bytes just written,
takes the quantization error ``E`` and keeps its best rank-R approximation (LoRC, reference
quality-anchors.md §4). With an importance matrix the error is first weighted by the square
root of each input column's mean squared activation, so the SVD minimises the expected *output*
error of the layer rather than the weight error (the diagonal form of LQER / QERA-approx);
``down`` is unweighted afterwards, so the adapter is an ordinary LoRA. The GGUF itself is
unchanged: a loader that applies the LoRA recovers part of the error, one that does not gets
the plain quantized model.

The report gives, per role, the relative weight error ||E||_F / ||W||_F before and after the
adapter (summed over the role's layers) and the fraction removed; with an imatrix also the
activation-weighted errors.

Example::

    builder = RecoveryBuilder(32)
    builder.add(name, weight, decision, encoded_bytes)      # for every tensor written
    builder.write("model-q4_k_m.recovery-r32.safetensors", family="wan")
    builder.report()                                       # {"ffn.up": {"before": .., "after": .., ...}}
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from vqtool.errors import InputError
from vqtool.lora.factors import RankRule, low_rank
from vqtool.lora.formats import DTYPES, FORMATS, LoraLayer, cast, check_output, write_lora

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

    from vqtool.quant.plan import TensorDecision

# Importance values below this fraction of a row's mean are raised to it (columns never seen
# by the calibration data would otherwise get an unbounded down-weighting).
IMPORTANCE_FLOOR = 1e-4


class RecoveryBuilder:
    """Collects one recovery LoRA: call :meth:`add` for every tensor quantized, then :meth:`write`."""

    def __init__(self, rank: int, *, imatrix: dict[str, "np.ndarray"] | None = None, dtype: str = "bf16") -> None:
        if rank < 1:
            raise InputError(f"--recovery-rank must be at least 1, got {rank}")
        if dtype not in DTYPES:
            raise InputError(f"unknown LoRA dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        self.rule = RankRule(rank=rank)
        self.rank = rank
        self.imatrix = imatrix
        self.dtype = dtype
        self.layers: list[LoraLayer] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add(self, name: str, tensor: "torch.Tensor", decision: "TensorDecision", encoded: "np.ndarray") -> None:
        """Record one written tensor; block-quantized 2-D weights get a rank-R error LoRA."""
        import torch

        from vqtool import ggml
        from vqtool.quant.imatrix import lookup

        self.shapes[name] = tuple(decision.shape)
        if not decision.quantized or len(decision.shape) != 2 or not name.endswith(".weight"):
            return
        w = tensor.detach().to(torch.float32).reshape(decision.shape)
        err = w - torch.from_numpy(ggml.dequantize(encoded, decision.type, decision.shape))
        importance = lookup(self.imatrix, name, decision.shape[-1])
        if importance is not None:
            imp = torch.from_numpy(importance).to(torch.float64)
            col = imp.clamp_min(IMPORTANCE_FLOOR * float(imp.mean()) or 1e-30).sqrt().to(torch.float32)
            f = low_rank(err * col, self.rule, name=name)
            down = f.down / col
        else:
            col, f = None, low_rank(err, self.rule, name=name)
            down = f.down
        if f.rank:
            self.layers.append(LoraLayer(name, cast(f.up, DTYPES[self.dtype]), cast(down, DTYPES[self.dtype])))
        # the stored (rounded) factors are what a loader applies: measure with those
        if f.rank:
            approx = self.layers[-1].up.float() @ self.layers[-1].down.float()
        else:
            approx = torch.zeros_like(err)
        rest = err - approx
        s = self._sums[decision.role]
        s["layers"] += 1
        s["w2"] += float(w.double().pow(2).sum())
        s["e2"] += float(err.double().pow(2).sum())
        s["r2"] += float(rest.double().pow(2).sum())
        if col is not None:
            c2 = col.double().pow(2)
            s["ww2"] += float((w.double().pow(2) * c2).sum())
            s["we2"] += float((err.double().pow(2) * c2).sum())
            s["wr2"] += float((rest.double().pow(2) * c2).sum())

    def report(self) -> dict[str, dict[str, Any]]:
        """Per role (and ``"all"``): layers, relative weight error before/after, fraction of the error removed."""
        totals: dict[str, float] = defaultdict(float)
        out: dict[str, dict[str, Any]] = {}
        for role, s in sorted(self._sums.items()):
            for k, v in s.items():
                totals[k] += v
            out[role] = _summary(s)
        if self._sums:
            out["all"] = _summary(totals)
        return out

    def write(self, path: str | os.PathLike, *, family: str, fmt: str = "diffusers", overwrite: bool = False,
              metadata: dict[str, str] | None = None) -> dict[str, Any]:
        """Write the adapter of a ``family`` model (format ``fmt``); returns :func:`vqtool.lora.formats.write_lora`'s summary."""
        import json

        if fmt not in FORMATS:
            raise InputError(f"unknown LoRA format {fmt!r}; choose one of {', '.join(FORMATS)}")
        meta = {"vqtool.lora.kind": "quantization-recovery", "vqtool.lora.rank": str(self.rank),
                "vqtool.lora.weighting": "imatrix" if self.imatrix else "none",
                "vqtool.lora.scale": "1 (apply at strength 1.0)", "vqtool.family": family,
                "vqtool.lora.report": json.dumps(self.report(), sort_keys=True), **(metadata or {})}
        return write_lora(self.layers, path, fmt=fmt, family=family, shapes=self.shapes, dtype=self.dtype,
                          metadata=meta, overwrite=overwrite)


def _summary(s: dict[str, float]) -> dict[str, Any]:
    def rel(a: str, b: str) -> float:
        return math.sqrt(s[a] / s[b]) if s.get(b) else 0.0

    out: dict[str, Any] = {"layers": int(s["layers"]), "before": rel("e2", "w2"), "after": rel("r2", "w2")}
    out["removed"] = 1.0 - out["after"] / out["before"] if out["before"] else 0.0
    if s.get("ww2"):
        out["weighted_before"], out["weighted_after"] = rel("we2", "ww2"), rel("wr2", "ww2")
        out["weighted_removed"] = 1.0 - out["weighted_after"] / out["weighted_before"] if out["weighted_before"] else 0.0
    return out


def recovery_path(gguf_path: str, rank: int, fmt: str) -> str:
    """Where the adapter of ``model.gguf`` goes: ``model.recovery-r{rank}.safetensors`` (``.gguf`` for gguf)."""
    stem = gguf_path[: -len(".gguf")] if gguf_path.endswith(".gguf") else gguf_path
    return f"{stem}.recovery-r{rank}.{'gguf' if fmt == 'gguf' else 'safetensors'}"


def render_recovery(report: dict[str, dict[str, Any]]) -> list[str]:
    """Lines for the quantize summary: per role, weight error before -> after and the share removed."""
    lines = []
    for role, v in report.items():
        line = (f"    {role:<16} {v['layers']:>4} layers  weight error {100 * v['before']:6.2f}% -> "
                f"{100 * v['after']:6.2f}%  (-{100 * v['removed']:.1f}%)")
        if "weighted_before" in v:
            line += (f"  activation-weighted {100 * v['weighted_before']:6.2f}% -> {100 * v['weighted_after']:6.2f}% "
                     f"(-{100 * v['weighted_removed']:.1f}%)")
        lines.append(line)
    return lines


def make_builders(rank: int, outputs: list[tuple[str, str]], *, fmt: str = "diffusers", imatrix: str | None = None,
                  overwrite: bool = False, dtype: str = "bf16"):
    """One builder per ``(policy, gguf path)`` and the ``on_tensor`` hook for
    :func:`vqtool.quant.run.quantize_model`. Refuses existing adapter files before any work."""
    from vqtool.quant.imatrix import load_imatrix

    if fmt not in FORMATS:
        raise InputError(f"unknown LoRA format {fmt!r}; choose one of {', '.join(FORMATS)}")
    for _, path in outputs:
        check_output(recovery_path(path, rank, fmt), fmt, overwrite)
    weights = load_imatrix(imatrix) if imatrix else None
    builders = [RecoveryBuilder(rank, imatrix=weights, dtype=dtype) for _ in outputs]

    def on_tensor(index: int, name: str, tensor, decision, encoded) -> None:
        builders[index].add(name, tensor, decision, encoded)

    return builders, on_tensor


def write_recovery(run, builders: list[RecoveryBuilder], *, fmt: str = "diffusers",
                   overwrite: bool = False) -> list[dict[str, Any]]:
    """Write each output's adapter next to its GGUF; per output: path, written summary, per-role report."""
    out = []
    for o, builder in zip(run.outputs, builders):
        path = recovery_path(o.path, builder.rank, fmt)
        written = builder.write(path, family=o.plan.family, fmt=fmt, overwrite=overwrite,
                                metadata={"vqtool.lora.base_gguf": os.path.basename(o.path),
                                          "vqtool.policy.name": o.plan.policy.name})
        out.append({"gguf": o.path, "path": path, "rank": builder.rank, "layers": written["layers"],
                    "bytes": written["bytes"], "by_role": builder.report()})
    return out
