"""Low-rank factors of one weight difference: SVD, rank selection and outlier clamping.

A LoRA layer here is always *scale 1*: ``W' = W + up @ down`` with ``down`` [r, in] and
``up`` [out, r]. Writers for formats with an alpha convert at write time
(:mod:`vqtool.lora.formats`).

Rank rules (reference quality-anchors.md §5, kohya ``resize_lora.py`` and LyCORIS ``extract_linear``):

- ``rank``: a fixed rank r (capped by min(out, in)).
- ``energy``: the smallest r whose singular values keep a fraction ``energy`` of the squared
  Frobenius norm, sum(S[:r]^2) / sum(S^2) >= energy (kohya's ``sv_fro`` with p^2 = energy).
- ``ratio``: keep singular values S_i > ratio * S_max (kohya ``sv_ratio`` with p = 1/ratio; LyCORIS ``ratio``).

``max_rank`` caps the dynamic rules. The singular values are split evenly between the factors
(``up = U sqrt(S)``, ``down = sqrt(S) Vh``) so both have the same range in fp16/bf16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vqtool.errors import InputError, NonFiniteError

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class RankRule:
    """How many singular values to keep: exactly one of ``rank``, ``energy``, ``ratio``; ``max_rank`` caps."""

    rank: int | None = None
    energy: float | None = None
    ratio: float | None = None
    max_rank: int | None = None

    def __post_init__(self) -> None:
        given = [k for k in ("rank", "energy", "ratio") if getattr(self, k) is not None]
        if len(given) != 1:
            raise InputError("give exactly one of --rank, --energy or --ratio")
        if self.rank is not None and self.rank < 1:
            raise InputError(f"--rank must be at least 1, got {self.rank}")
        if self.energy is not None and not 0.0 < self.energy <= 1.0:
            raise InputError(f"--energy is a fraction in (0, 1], got {self.energy}")
        if self.ratio is not None and not 0.0 < self.ratio < 1.0:
            raise InputError(f"--ratio is a fraction of the largest singular value in (0, 1), got {self.ratio}")
        if self.max_rank is not None and self.max_rank < 1:
            raise InputError(f"--max-rank must be at least 1, got {self.max_rank}")

    def describe(self) -> str:
        if self.rank is not None:
            return f"rank {self.rank}"
        rule = f"energy {self.energy}" if self.energy is not None else f"ratio {self.ratio}"
        return rule + (f", max rank {self.max_rank}" if self.max_rank else "")

    def choose(self, s: "torch.Tensor") -> int:
        """The rank for singular values ``s`` (descending); 0 when the difference is zero."""
        import torch

        n = int(s.numel())
        if n == 0 or float(s[0]) <= 0.0:
            return 0
        if self.rank is not None:
            return min(self.rank, n)
        if self.energy is not None:
            e = s.double() ** 2
            cum = torch.cumsum(e, 0) / e.sum()
            # a hair of slack so that energy=1.0 is met despite rounding in the cumulative sum
            r = int(torch.searchsorted(cum, torch.tensor(self.energy - 1e-12, dtype=torch.float64)).item()) + 1
        else:
            r = int((s > self.ratio * s[0]).sum().item())
        r = max(1, min(r, n))
        return min(r, self.max_rank) if self.max_rank else r


@dataclass
class Factors:
    """``up @ down`` approximates a difference; ``stats`` is its line of the report."""

    up: "torch.Tensor"  # [out, r]
    down: "torch.Tensor"  # [r, in]
    stats: dict[str, Any]

    @property
    def rank(self) -> int:
        return int(self.down.shape[0])


def _clamp(up: "torch.Tensor", down: "torch.Tensor", quantile: float) -> tuple["torch.Tensor", "torch.Tensor", float]:
    """Clip both factors to +-q, q the ``quantile`` of their absolute values (kohya ``--clamp_quantile``)."""
    import torch

    values = torch.cat([up.reshape(-1), down.reshape(-1)]).abs()
    k = max(1, min(values.numel(), int(math.ceil(quantile * values.numel()))))
    hi = float(torch.kthvalue(values, k).values)
    return up.clamp(-hi, hi), down.clamp(-hi, hi), hi


def low_rank(delta: "torch.Tensor", rule: RankRule, *, clamp_quantile: float | None = None, name: str = "",
             reference_norm: float | None = None) -> Factors:
    """Factor ``delta`` [out, in] (any float dtype; computed in float32) by truncated SVD under ``rule``.

    ``stats`` holds: ``rank``; ``energy`` (fraction of ||delta||_F^2 the kept singular values carry);
    ``rel_error`` (||delta - up @ down||_F / ||delta||_F, after clamping); ``diff_norm`` (||delta||_F)
    and ``rel_diff`` (||delta||_F / ``reference_norm``, e.g. the base weight's norm); ``clamp`` (the
    clip value, when clamping).
    """
    import torch

    d = delta.detach().to(torch.float32)
    if d.ndim != 2:
        raise InputError(f"a LoRA factors 2-D weights; got shape {tuple(d.shape)}", tensor=name or None)
    if not torch.isfinite(d).all():
        raise NonFiniteError("the weight difference has NaN or Inf values", tensor=name or None)
    total = float(torch.linalg.matrix_norm(d))
    stats: dict[str, Any] = {"shape": list(d.shape), "diff_norm": total}
    if reference_norm:
        stats["rel_diff"] = total / reference_norm
    if total == 0.0:
        out, inn = d.shape
        stats.update(rank=0, energy=1.0, rel_error=0.0)
        return Factors(d.new_zeros(out, 0), d.new_zeros(0, inn), stats)
    u, s, vh = torch.linalg.svd(d, full_matrices=False)
    r = rule.choose(s)
    root = s[:r].sqrt()
    up = u[:, :r] * root
    down = root[:, None] * vh[:r]
    e = s.double() ** 2
    stats["energy"] = float(e[:r].sum() / e.sum())
    if clamp_quantile is not None:
        up, down, hi = _clamp(up, down, clamp_quantile)
        stats["clamp"] = hi
    stats["rank"] = r
    stats["rel_error"] = float(torch.linalg.matrix_norm(d - up @ down)) / total
    return Factors(up.contiguous(), down.contiguous(), stats)
