"""The one place that reads ``vqtool validate``'s report.json for publishing.

Everything else in :mod:`vqtool.publish` sees :class:`CandidateMetrics`, so a change in the report
layout touches :func:`candidate_metrics` only. Layout read (``report_version`` 1, written by
:mod:`vqtool.validate.report`)::

    {"report_version": 1, "settings": {...}, "reference": {"weights": {"path": ...}, ...},
     "candidates": [{"name": ..., "weights": {"path": ..., "policy": ...},
                     "summary": {"psnr_mean": 31.2, "ssim_mean": 0.95, "psnr_min": ..., ...}}]}

Non-finite numbers are the strings ``"inf"``/``"-inf"``/``"nan"`` (identical videos have PSNR inf).
Candidates are matched to published files by the base name of ``weights.path`` (a GGUF file or a
torchao folder).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

from vqtool.errors import InputError

log = logging.getLogger(__name__)

REPORT_NAME = "report.json"
READS_VERSIONS = (1,)


@dataclass(frozen=True)
class CandidateMetrics:
    """Quality of one candidate against full precision, as a model card shows it."""

    key: str  # base name of the candidate file or folder
    psnr: float | None = None  # mean PSNR over the report's videos, dB (inf when identical)
    ssim: float | None = None  # mean SSIM
    psnr_min: float | None = None
    videos: int | None = None
    report: str = ""  # the report.json it came from
    settings: dict[str, Any] = field(default_factory=dict)  # frames, size, steps... of that run


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return float(value)  # "inf", "-inf", "nan"
        except ValueError:
            return None
    if isinstance(value, (int, float)):
        return float(value)
    return None


def candidate_metrics(report: dict[str, Any], source: str = "") -> list[CandidateMetrics]:
    """The per-candidate metrics of a parsed report.json (the only function that knows its layout)."""
    version = report.get("report_version")
    if version not in READS_VERSIONS or not isinstance(report.get("candidates"), list):
        raise InputError(f"not a vqtool validate report this vqtool reads (report_version {version!r}; "
                         f"reads {', '.join(map(str, READS_VERSIONS))})", path=source or None)
    settings = report.get("settings") or {}
    brief = {k: settings[k] for k in ("frames", "height", "width", "steps", "guidance", "dtype", "pipeline")
             if k in settings}
    out = []
    for cand in report["candidates"]:
        weights = cand.get("weights") or {}
        path = weights.get("path") or cand.get("name") or ""
        summary = cand.get("summary") or {}
        out.append(CandidateMetrics(
            key=os.path.basename(os.path.normpath(str(path))), psnr=_number(summary.get("psnr_mean")),
            ssim=_number(summary.get("ssim_mean")), psnr_min=_number(summary.get("psnr_min")),
            videos=summary.get("videos"), report=source, settings=brief,
        ))
    return out


def read_report(path: str | os.PathLike) -> list[CandidateMetrics]:
    """Metrics of every candidate in the report.json at ``path`` (a file or a folder holding one)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, REPORT_NAME)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise InputError("no such report.json", path=path) from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not a readable report.json ({exc})", path=path) from None
    return candidate_metrics(data, path)


def find_reports(folder: str | os.PathLike) -> list[str]:
    """Every report.json under ``folder`` (sorted; hidden folders skipped)."""
    found = []
    for root, dirs, files in os.walk(os.fspath(folder)):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if REPORT_NAME in files:
            found.append(os.path.join(root, REPORT_NAME))
    return sorted(found)


def metrics_by_file(reports: list[str]) -> dict[str, CandidateMetrics]:
    """Candidate base name -> metrics over several reports; a later report does not override an earlier one."""
    out: dict[str, CandidateMetrics] = {}
    for path in reports:
        for m in read_report(path):
            if m.key in out:
                log.warning("%s: %s is also in %s; using the first", path, m.key, out[m.key].report)
                continue
            out[m.key] = m
    return out


def format_psnr(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "identical"
    return f"{value:.2f} dB"


def format_ssim(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.4f}"
