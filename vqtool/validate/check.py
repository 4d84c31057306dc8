"""``vqtool check`` as a library call: does a validation report meet thresholds or hold against a baseline?

Each candidate is checked on its summary: ``psnr_mean`` and ``ssim_mean`` against absolute
minima, or against the candidate of the same name in a baseline report (PSNR may drop by at
most ``max_psnr_drop`` dB, SSIM by at most ``max_ssim_drop``). An ``inf`` PSNR (identical
videos) passes every minimum; a baseline ``inf`` is compared as such, so any loss of
exactness is a regression when no drop is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from vqtool.errors import InputError
from vqtool.validate.metrics import from_json_number, json_number

STATS = ("mean", "min")


@dataclass
class CheckResult:
    """The outcome: ``ok``, one line per failure, and what was compared."""

    ok: bool
    failures: list[str] = field(default_factory=list)
    checked: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reason(self) -> str:
        """One line: the first failure (and how many more), or a pass summary."""
        if self.ok:
            names = ", ".join(c["name"] for c in self.checked)
            return f"quality holds for {len(self.checked)} candidate(s): {names}"
        more = f" (and {len(self.failures) - 1} more)" if len(self.failures) > 1 else ""
        return self.failures[0] + more

    def to_dict(self) -> dict[str, Any]:
        checked = [{k: json_number(v) if isinstance(v, float) else v for k, v in row.items()} for row in self.checked]
        return {"ok": self.ok, "reason": self.reason, "failures": self.failures, "checked": checked}


def _value(summary: dict[str, Any], metric: str, stat: str) -> float | None:
    return from_json_number(summary.get(f"{metric}_{stat}"))


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "missing"
    return ("inf" if math.isinf(v) else f"{v:.4g}") + unit


def check_report(report: dict[str, Any], *, min_psnr: float | None = None, min_ssim: float | None = None,
                 baseline: dict[str, Any] | None = None, max_psnr_drop: float | None = None,
                 max_ssim_drop: float | None = None, candidates: list[str] | None = None,
                 stat: str = "mean") -> CheckResult:
    """Check every candidate of ``report`` (or those named in ``candidates``); see the module docstring."""
    if stat not in STATS:
        raise InputError(f"stat must be one of {', '.join(STATS)}, not {stat!r}")
    if min_psnr is None and min_ssim is None and baseline is None:
        raise InputError("nothing to check: give --min-psnr/--min-ssim and/or --baseline with --max-psnr-drop")
    if baseline is None and (max_psnr_drop is not None or max_ssim_drop is not None):
        raise InputError("--max-psnr-drop/--max-ssim-drop need --baseline OLD.json")
    if baseline is not None and max_psnr_drop is None and max_ssim_drop is None:
        max_psnr_drop = 0.0  # a baseline alone: no PSNR may drop
    entries = report["candidates"]
    if candidates:
        unknown = sorted(set(candidates) - {c["name"] for c in entries})
        if unknown:
            raise InputError(f"no candidate named {', '.join(unknown)} in the report "
                             f"(it has: {', '.join(c['name'] for c in entries)})")
        entries = [c for c in entries if c["name"] in candidates]
    base = {c["name"]: c for c in baseline["candidates"]} if baseline is not None else {}
    result = CheckResult(ok=True)
    for c in entries:
        name, s = c["name"], c["summary"]
        psnr, ssim = _value(s, "psnr", stat), _value(s, "ssim", stat)
        row: dict[str, Any] = {"name": name, f"psnr_{stat}": psnr, f"ssim_{stat}": ssim}
        if min_psnr is not None and (psnr is None or psnr < min_psnr):
            result.failures.append(f"{name}: PSNR ({stat}) {_fmt(psnr, ' dB')} is below the minimum {min_psnr:g} dB")
        if min_ssim is not None and (ssim is None or ssim < min_ssim):
            result.failures.append(f"{name}: SSIM ({stat}) {_fmt(ssim)} is below the minimum {min_ssim:g}")
        if baseline is not None:
            if name not in base:
                result.failures.append(f"{name}: not in the baseline report (it has: {', '.join(base) or 'none'})")
            else:
                old = base[name]["summary"]
                old_psnr, old_ssim = _value(old, "psnr", stat), _value(old, "ssim", stat)
                row.update({"baseline_psnr": old_psnr, "baseline_ssim": old_ssim})
                if max_psnr_drop is not None and old_psnr is not None:
                    drop = _drop(old_psnr, psnr)
                    row["psnr_drop"] = drop
                    if drop > max_psnr_drop:
                        result.failures.append(f"{name}: PSNR ({stat}) fell from {_fmt(old_psnr, ' dB')} to "
                                               f"{_fmt(psnr, ' dB')}, more than the allowed {max_psnr_drop:g} dB")
                if max_ssim_drop is not None and old_ssim is not None:
                    drop = _drop(old_ssim, ssim)
                    row["ssim_drop"] = drop
                    if drop > max_ssim_drop:
                        result.failures.append(f"{name}: SSIM ({stat}) fell from {_fmt(old_ssim)} to {_fmt(ssim)}, "
                                               f"more than the allowed {max_ssim_drop:g}")
        result.checked.append(row)
    if not result.checked:
        raise InputError("the report holds no candidate to check")
    result.ok = not result.failures
    return result


def _drop(old: float, new: float | None) -> float:
    """How much ``new`` is below ``old`` (inf - finite is an infinite drop; inf - inf is none)."""
    if new is None:
        return math.inf
    if math.isinf(old) and math.isinf(new):
        return 0.0
    return old - new
