"""Readable summaries of quantization plans and runs (``--dry-run`` and the final table)."""

from __future__ import annotations

from vqtool.inspect import human_bytes, human_count
from vqtool.quant.plan import QuantPlan

HEADER_ESTIMATE = 64 * 1024  # KV + tensor infos of a typical file, for the size estimate


def _table(rows: list[list[str]], header: list[str]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join("{:<%d}" % w if i == 0 else "{:>%d}" % w for i, w in enumerate(widths))
    return [fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*map(str, r)) for r in rows)]


def _types(types: dict[str, int]) -> str:
    return " ".join(f"{t}x{n}" for t, n in sorted(types.items(), key=lambda kv: -kv[1]))


def render_plan(plan: QuantPlan, out_path: str | None = None, per_tensor: bool = False) -> str:
    """The plan of one policy: by role, by block, fallbacks and the estimated file size."""
    p = plan.policy
    lines = [
        f"policy {p.name}: {p.description}",
        f"  model: {plan.family} {plan.variant} {plan.component}" + (f"  ->  {out_path}" if out_path else ""),
        f"  {len(plan.decisions)} tensors, {human_count(plan.total_params)} parameters, "
        f"{plan.bits_per_weight:.3f} bits/weight, estimated file size {human_bytes(plan.total_bytes + HEADER_ESTIMATE)}",
        "",
    ]
    rows = [[role, v["tensors"], human_count(v["params"]), human_bytes(v["bytes"]), v["bpw"], _types(v["types"])]
            for role, v in sorted(plan.by("role").items())]
    lines += ["  " + l for l in _table(rows, ["role", "tensors", "params", "bytes", "bpw", "types"])]
    blocks = plan.by("block")
    rows = [[b, v["tensors"], human_bytes(v["bytes"]), v["bpw"], _types(v["types"])] for b, v in blocks.items()]
    lines += ["", *("  " + l for l in _table(rows, ["block", "tensors", "bytes", "bpw", "types"]))]
    if plan.fallbacks:
        lines += ["", f"  fallbacks ({len(plan.fallbacks)}): rows not divisible by the block size"]
        lines += [f"    {d.name} {list(d.shape)}: {' -> '.join([*d.fallback, d.type])}" for d in plan.fallbacks]
    else:
        lines += ["", "  fallbacks: none"]
    if per_tensor:
        rows = [[d.name, "x".join(map(str, d.shape)), d.role, d.type, d.rule] for d in plan.decisions]
        lines += ["", *("  " + l for l in _table(rows, ["tensor", "shape", "role", "type", "why"]))]
    return "\n".join(lines)
