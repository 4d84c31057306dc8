"""Quality validation of quantized transformers: metrics, videos, weight errors, reports, checks.

Public API (imports are lazy: this package root stays light)::

    validate(reference, candidates, out, ...) -> report dict      # vqtool validate
    check_report(report, min_psnr=..., ...) -> CheckResult         # vqtool check
    run_demo(out, ...) -> dict                                     # vqtool demo
"""

from __future__ import annotations

_EXPORTS = {
    "validate": "vqtool.validate.run",
    "check_report": "vqtool.validate.check",
    "CheckResult": "vqtool.validate.check",
    "run_demo": "vqtool.validate.demo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
