"""Describe a checkpoint from its headers: format, model, tensors, dtypes, sizes.

:func:`describe` returns a plain dict (what ``vqtool inspect --json`` prints);
:func:`render` turns it into the readable report.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from typing import Any

from vqtool.io import Checkpoint, TensorStore, open_checkpoint

LONG_VALUE = 8  # metadata arrays longer than this are summarised in the readable report


def _detect(store: TensorStore) -> dict[str, Any]:
    """Family/variant/component/config and per-tensor roles; "unknown" when no family matches."""
    try:
        from vqtool.detect import detect
    except ImportError:  # detection registry not installed in this build
        return {"family": "unknown", "variant": "unknown", "component": "unknown", "config": {}, "roles": {}}
    found = detect(store)
    return {
        "family": found.family,
        "variant": found.variant,
        "component": found.component,
        "config": dict(found.config or {}),
        "roles": dict(found.roles or {}),
    }


def _files_size(files: list[str]) -> int:
    return sum(os.path.getsize(f) for f in files if os.path.isfile(f))


def describe_store(store: TensorStore, name: str) -> dict[str, Any]:
    """Everything ``inspect`` reports about one component store (headers only)."""
    detected = _detect(store)
    roles: dict[str, str] = detected.pop("roles")
    dtypes: dict[str, dict[str, int]] = defaultdict(lambda: {"tensors": 0, "params": 0, "bytes": 0})
    by_role: dict[str, dict[str, int]] = defaultdict(lambda: {"tensors": 0, "params": 0, "bytes": 0})
    tensors = []
    params = 0
    for info in store.infos().values():
        params += info.numel
        for bucket in (dtypes[info.dtype], by_role[roles.get(info.name, "unknown")]):
            bucket["tensors"] += 1
            bucket["params"] += info.numel
            bucket["bytes"] += info.nbytes
        tensors.append(
            {"name": info.name, "shape": list(info.shape), "dtype": info.dtype, "bytes": info.nbytes,
             "role": roles.get(info.name, "unknown"), **({"ggml_type": info.ggml_type} if info.ggml_type else {})}
        )
    total_bytes = sum(t["bytes"] for t in tensors)
    out: dict[str, Any] = {
        "component": name if detected["component"] in ("unknown", None) else detected["component"],
        "format": store.format,
        "family": detected["family"],
        "variant": detected["variant"],
        "config": detected["config"],
        "files": store.files,
        "file_size": _files_size(store.files),
        "tensor_count": len(tensors),
        "param_count": params,
        "tensor_bytes": total_bytes,
        "bits_per_weight": round(8 * total_bytes / params, 4) if params else None,
        "dtypes": dict(sorted(dtypes.items(), key=lambda kv: -kv[1]["params"])),
        "tensors": tensors,
    }
    if store.format == "gguf" or any(t.get("ggml_type") for t in tensors):
        out["gguf"] = {
            "metadata": store.metadata,
            "ggml_types": dict(Counter(t["ggml_type"] for t in tensors)),
            "bits_per_weight_by_role": {
                role: {**v, "bpw": round(8 * v["bytes"] / v["params"], 4) if v["params"] else None}
                for role, v in sorted(by_role.items())
            },
        }
    elif store.metadata:
        out["metadata"] = store.metadata
    if store.config is not None:
        out["source_config"] = store.config
    return out


def describe(path: str | os.PathLike) -> dict[str, Any]:
    """Describe any input vqtool reads; see :func:`describe_store` for the per-component fields."""
    with open_checkpoint(path) as ckpt:
        return describe_checkpoint(ckpt)


def describe_checkpoint(ckpt: Checkpoint) -> dict[str, Any]:
    from vqtool import __version__

    components = {name: describe_store(store, name) for name, store in ckpt.components.items()}
    return {
        "vqtool_version": __version__,
        "path": ckpt.path,
        "format": ckpt.format,
        "total_file_size": sum(c["file_size"] for c in components.values()),
        "components": components,
        "extras": ckpt.extras,
    }


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"  # pragma: no cover


def human_count(n: float) -> str:
    for unit in ("", "K", "M", "B"):
        if abs(n) < 1000 or unit == "B":
            return f"{n:.0f}" if unit == "" else f"{n:.3g}{unit}"
        n /= 1000
    return f"{n:.3g}B"  # pragma: no cover


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join("{:<%d}" % w if i == 0 else "{:>%d}" % w for i, w in enumerate(widths))
    return [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*map(str, r)) for r in rows)]


def _short(value: Any) -> str:
    if isinstance(value, list) and len(value) > LONG_VALUE:
        return f"[{', '.join(map(repr, value[:4]))}, ... ({len(value)} items)]"
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def render(report: dict[str, Any], show_tensors: bool = False) -> str:
    """The readable form of :func:`describe`'s report."""
    lines = [f"{report['path']}", f"  format: {report['format']}   size on disk: {human_bytes(report['total_file_size'])}"]
    for name, c in report["components"].items():
        lines += ["", f"[{c['component']}]  {c['format']}"]
        model = " / ".join(str(c[k]) for k in ("family", "variant"))
        lines.append(f"  model:      {model}")
        if c["config"]:
            lines.append("  config:     " + ", ".join(f"{k}={v}" for k, v in c["config"].items()))
        lines.append(f"  files:      {len(c['files'])} ({human_bytes(c['file_size'])})")
        lines.append(
            f"  tensors:    {c['tensor_count']}   parameters: {human_count(c['param_count'])} ({c['param_count']:,})"
            f"   bits/weight: {c['bits_per_weight']}"
        )
        rows = [[d, v["tensors"], human_count(v["params"]), human_bytes(v["bytes"])] for d, v in c["dtypes"].items()]
        lines += ["", *("  " + l for l in _table(rows, ["dtype", "tensors", "params", "bytes"]))]
        if "gguf" in c:
            g = c["gguf"]
            rows = [
                [role, v["tensors"], human_count(v["params"]), human_bytes(v["bytes"]), v["bpw"]]
                for role, v in g["bits_per_weight_by_role"].items()
            ]
            lines += ["", *("  " + l for l in _table(rows, ["role", "tensors", "params", "bytes", "bits/weight"]))]
            lines += ["", "  metadata:"]
            lines += [f"    {k} = {_short(v)}" for k, v in g["metadata"].items()]
        if show_tensors:
            rows = [
                [t["name"], "x".join(map(str, t["shape"])) or "scalar", t["dtype"], t["role"], human_bytes(t["bytes"])]
                for t in c["tensors"]
            ]
            lines += ["", *("  " + l for l in _table(rows, ["tensor", "shape", "dtype", "role", "bytes"]))]
    if report["extras"]:
        lines += ["", "other parts: " + ", ".join(f"{k} ({v})" for k, v in report["extras"].items())]
    return "\n".join(lines)
