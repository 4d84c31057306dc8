"""report.json: what a validation run measured, with the settings and versions that produced it.

Layout (``REPORT_VERSION`` 1)::

    {"report_version": 1, "tool": "vqtool validate", "created": ISO time, "versions": {...},
     "settings": {...resolved sampling settings, dtype, device, memory options, prompts, seeds...},
     "reference": {"weights": {...}, "videos": [{"id", "prompt", "seed", "path", "frames", "flicker",
                   "flicker_per_frame", "seconds", "seconds_per_step", ...}]},
     "candidates": [{"name", "weights": {...path, policy, file_bytes, bits_per_weight},
                     "summary": {"psnr_mean", "psnr_min", "ssim_mean", "ssim_min", "flicker_delta_mean",
                                 "latent_rel_err_final_mean", "weight_rel_rmse", ...},
                     "videos": [{"id", "path", "compare_path", "psnr", "psnr_per_frame", "ssim",
                                 "ssim_per_frame", "flicker", "flicker_delta", "latent_rel_err_per_step", ...}],
                     "weight_errors": {"overall", "by_role", "by_block", "tensors"}}]}

Non-finite numbers (PSNR of identical videos) are the strings ``"inf"``/``"-inf"``/``"nan"``.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from typing import Any

from vqtool.errors import InputError
from vqtool.validate.metrics import from_json_number, json_number, mean

REPORT_VERSION = 1
SUMMARY_KEYS = ("psnr_mean", "psnr_min", "ssim_mean", "ssim_min", "flicker_delta_mean", "latent_rel_err_final_mean")


def versions() -> dict[str, str | None]:
    """Versions of vqtool, Python and the libraries whose numerics the report depends on."""
    from importlib import metadata

    from vqtool import __version__

    out: dict[str, str | None] = {"vqtool": __version__, "python": sys.version.split()[0],
                                  "platform": platform.platform()}
    for dist in ("torch", "diffusers", "transformers", "accelerate", "numpy", "gguf", "av", "matplotlib"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def summarize(videos: list[dict[str, Any]], weight_overall: dict[str, Any] | None) -> dict[str, Any]:
    """Per-candidate summary over its videos (means and minima), plus the overall weight error."""
    def values(key: str) -> list[float]:
        return [from_json_number(v[key]) for v in videos if v.get(key) is not None]

    psnrs, ssims = values("psnr"), values("ssim")
    finals = [from_json_number(v["latent_rel_err_per_step"][-1]) for v in videos if v.get("latent_rel_err_per_step")]
    steps = [s for v in videos for s in v.get("seconds_per_step", [])]
    peaks = [v["peak_memory_bytes"] for v in videos if v.get("peak_memory_bytes") is not None]
    out = {
        "videos": len(videos),
        "psnr_mean": json_number(mean(psnrs)), "psnr_min": json_number(min(psnrs) if psnrs else None),
        "ssim_mean": json_number(mean(ssims)), "ssim_min": json_number(min(ssims) if ssims else None),
        "flicker_delta_mean": json_number(mean(values("flicker_delta"))),
        "latent_rel_err_final_mean": json_number(mean(finals)),
        "latent_rel_err_final_max": json_number(max(finals) if finals else None),
        "max_abs_diff": json_number(max(values("max_abs_diff"), default=None)),
        "seconds_per_step": json_number(mean(steps)),
        "peak_memory_bytes": max(peaks) if peaks else None,
    }
    if weight_overall is not None:
        out["weight_rel_rmse"] = weight_overall["rel_rmse"]
        out["weight_snr_db"] = weight_overall["snr_db"]
    return out


def write_json(data: dict[str, Any], path: str) -> None:
    """Write ``data`` as indented strict JSON, atomically."""
    from vqtool.validate.files import write_text

    write_text(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


def load_report(path: str) -> dict[str, Any]:
    """A report.json (a file, or a folder holding one), checked for the fields ``vqtool check`` reads."""
    if os.path.isdir(path):
        path = os.path.join(path, "report.json")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise InputError("no such report; pass the report.json that `vqtool validate` wrote", path=path) from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable JSON report ({exc})", path=path) from None
    if not isinstance(data, dict) or not isinstance(data.get("candidates"), list):
        raise InputError("not a `vqtool validate` report (no 'candidates' list)", path=path)
    if data.get("report_version") != REPORT_VERSION:
        raise InputError(f"report version {data.get('report_version')!r}; this vqtool reads version {REPORT_VERSION}",
                         path=path)
    for c in data["candidates"]:
        if not isinstance(c, dict) or "name" not in c or not isinstance(c.get("summary"), dict):
            raise InputError("a candidate entry lacks 'name' or 'summary'", path=path)
    return data


def _fmt(value, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    return format(value, spec)


def summary_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """Header and one row per candidate: size, bits/weight, PSNR, SSIM, flicker, latent and weight error."""
    rows = [("candidate", "size MB", "bits/weight", "PSNR dB", "min PSNR", "SSIM", "flicker d", "latent err", "weight err")]
    for c in report["candidates"]:
        s = c["summary"]
        size = s.get("file_bytes")
        rows.append((c["name"], _fmt(size / 1e6 if size else None, ".2f"), _fmt(s.get("bits_per_weight"), ".2f"),
                     _fmt(s.get("psnr_mean"), ".2f"), _fmt(s.get("psnr_min"), ".2f"), _fmt(s.get("ssim_mean"), ".4f"),
                     _fmt(s.get("flicker_delta_mean"), "+.4f"), _fmt(s.get("latent_rel_err_final_mean"), ".4f"),
                     _fmt(s.get("weight_rel_rmse"), ".4f")))
    return rows


def render_summary(report: dict[str, Any]) -> str:
    """:func:`summary_rows` as an aligned plain-text table."""
    rows = summary_rows(report)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    return "\n".join(lines)
