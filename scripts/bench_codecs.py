#!/usr/bin/env python
"""Throughput and error of vqtool's GGML codecs, side by side with ggml's C quantizer.

For every type: million elements per second of ``vqtool.ggml.quantize`` (numpy, all
cores, or torch on ``--device``), of ggml's ``ggml_quantize_chunk`` on one thread
(through libggml-python), and of gguf-py's ``quantize`` where it has the type; with and
without an importance matrix; plus the relative RMSE of the round trip and whether our
bytes equal ggml's. Prints a Markdown table (``--json`` for machine-readable rows).

    python scripts/bench_codecs.py                       # 512 x 4096, every type
    python scripts/bench_codecs.py --types Q4_K,Q6_K --rows 1024
    python scripts/bench_codecs.py --device cuda --rows 8192   # GPU path
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import ggml_oracle  # noqa: E402

import vqtool.ggml as g  # noqa: E402

GGUF_PY_TYPES = {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"}


CPU_SECONDS: dict[str, float] = {}


def _timed(fn, repeat: int, key: str | None = None) -> tuple[float, object]:
    """Best wall time of ``repeat`` runs after one warm-up.

    The least CPU time of those runs (all threads of this process) goes to
    ``CPU_SECONDS[key]``: on a shared machine it shows the work per element even
    when other jobs take cores away.
    """
    result = fn()
    best = best_cpu = float("inf")
    for _ in range(max(1, repeat)):
        t0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    if key:
        CPU_SECONDS[key] = best_cpu
    return best, result


def _mels(n: int, seconds: float | None) -> float | None:
    return None if seconds is None else n / seconds / 1e6


def bench_type(qtype: str, x: np.ndarray, qw: np.ndarray, args) -> dict:
    c = g.codec(qtype)
    n = x.size
    row: dict = {"type": qtype, "bpw": round(c.bits_per_weight, 4)}
    src = x
    if args.device:
        import torch

        src = torch.from_numpy(x).to(args.device)

        def ours(w=None):
            out = g.quantize(src, qtype, w, device=args.device)
            torch.cuda.synchronize() if str(args.device).startswith("cuda") else None
            return out
    else:
        def ours(w=None):
            return g.quantize(src, qtype, w, threads=args.threads)

    t, raw = _timed(ours, args.repeat, "vqtool")
    row["vqtool"] = _mels(n, t)
    row["vqtool_per_cpu_s"] = _mels(n, CPU_SECONDS["vqtool"])
    y = g.dequantize(raw, qtype, x.shape)
    row["rel_rmse"] = float(np.sqrt(np.mean((x - y) ** 2) / np.mean(x ** 2)))
    if ggml_oracle.load() is not None:
        tc, ref = _timed(lambda: ggml_oracle.quantize_chunk(x, qtype), args.repeat, "c")
        row["ggml_c"] = _mels(n, tc)
        row["ggml_c_per_cpu_s"] = _mels(n, CPU_SECONDS["c"])
        row["exact"] = bool(np.array_equal(raw, ref))
    if c.uses_imatrix:
        ti, raw_i = _timed(lambda: ours(qw), args.repeat)
        row["vqtool_imatrix"] = _mels(n, ti)
        if ggml_oracle.load() is not None:
            tci, ref_i = _timed(lambda: ggml_oracle.quantize_chunk(x, qtype, qw), args.repeat)
            row["ggml_c_imatrix"] = _mels(n, tci)
            row["exact_imatrix"] = bool(np.array_equal(raw_i, ref_i))
    if qtype in GGUF_PY_TYPES:
        import gguf.quants

        tg, _ = _timed(lambda: gguf.quants.quantize(x, c.qtype), args.repeat)
        row["gguf_py"] = _mels(n, tg)
    return row


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "**NO**"
    if isinstance(v, float):
        return f"{v:.4g}" if v < 1 else f"{v:.1f}"
    return str(v)


def print_table(rows: list[dict], args) -> None:
    cols = [("type", "type"), ("bpw", "bpw"), ("vqtool", "vqtool"), ("ggml_c", "ggml C 1 thr"),
            ("vqtool_per_cpu_s", "vqtool /CPU-s"), ("ggml_c_per_cpu_s", "C /CPU-s"),
            ("gguf_py", "gguf-py"), ("vqtool_imatrix", "vqtool imat"),
            ("ggml_c_imatrix", "C imat"), ("rel_rmse", "rel. RMSE"),
            ("exact", "= ggml"), ("exact_imatrix", "= ggml (imat)")]
    print(f"\nMelem/s, {args.rows}x{args.cols} float32 Student-t(4), "
          f"vqtool on {args.device or f'numpy, {args.threads or os.cpu_count()} threads'}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the end. '/CPU-s' columns: Melem per "
          "CPU-second (work per element, insensitive to other jobs on the machine).\n")
    print("| " + " | ".join(h for _, h in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=512)
    p.add_argument("--cols", type=int, default=4096)
    p.add_argument("--types", default=",".join(g.available_types()))
    p.add_argument("--threads", type=int, default=None, help="numpy threads (default: all cores)")
    p.add_argument("--device", default=None, help="torch device, e.g. cuda (default: numpy)")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    x = rng.standard_t(4, (args.rows, args.cols)).astype(np.float32)
    qw = rng.lognormal(0.0, 1.5, args.cols).astype(np.float32)
    rows = [bench_type(t.strip().upper(), x, qw, args) for t in args.types.split(",") if t.strip()]
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        print_table(rows, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
