"""``vqtool demo``: the bundled tiny Wan2.1 pipeline, quantized and validated end to end, in under a minute.

Builds ``bundled:tiny-wan2.1-t2v-pipeline`` (seeded, offline), quantizes its transformer with
``mixed-q4`` and ``q8_0`` in one pass, and validates both against full precision on two
built-in prompts (9 frames, 48x48, 4 steps). Output folder::

    OUT/tiny-wan2.1-t2v-<policy>.gguf
    OUT/report/report.html, report.json, videos/...
"""

from __future__ import annotations

import os
import time
from typing import Any

from reference_infer.tasks import Settings
from vqtool.errors import OutputExistsError

BUNDLED = "tiny-wan2.1-t2v-pipeline"
POLICIES = ("mixed-q4", "q8_0")
SETTINGS = Settings(frames=9, height=48, width=48, steps=4, guidance=5.0)
PROMPT_COUNT = 2


def run_demo(out: str = "vqtool-demo", *, policies: tuple[str, ...] = POLICIES, settings: Settings = SETTINGS,
             overwrite: bool = False, html: bool = True, progress: bool = True) -> dict[str, Any]:
    """Quantize and validate the bundled tiny Wan model into ``out``; returns the validation report
    with ``demo`` timings (``seconds``: total, ``quantize_seconds``, ``validate_seconds``) added."""
    from reference_infer.inputs import BUILTIN_PROMPTS
    from vqtool.bundled import materialize
    from vqtool.quant.run import quantize_model
    from vqtool.validate.run import validate

    started = time.perf_counter()
    out = os.path.abspath(out)
    if os.path.exists(out) and os.listdir(out) and not overwrite:
        raise OutputExistsError("exists; pass --overwrite to replace the demo's files, or choose another -o", path=out)
    os.makedirs(out, exist_ok=True)
    src = materialize(BUNDLED)
    stem = BUNDLED.removesuffix("-pipeline")
    targets = [(p, os.path.join(out, f"{stem}-{p}.gguf")) for p in policies]
    q_started = time.perf_counter()
    quantize_model(src, targets, overwrite=overwrite, progress=progress)
    quantize_seconds = time.perf_counter() - q_started
    v_started = time.perf_counter()
    report = validate(src, [path for _, path in targets], os.path.join(out, "report"),
                      prompts=list(BUILTIN_PROMPTS[:PROMPT_COUNT]), seeds=[0], settings=settings, html=html,
                      overwrite=overwrite, threads=1, progress=progress)
    report["demo"] = {"out": out, "quantize_seconds": round(quantize_seconds, 2),
                      "validate_seconds": round(time.perf_counter() - v_started, 2),
                      "seconds": round(time.perf_counter() - started, 2),
                      "report_html": os.path.join(out, "report", "report.html") if html else None,
                      "report_json": os.path.join(out, "report", "report.json")}
    return report
