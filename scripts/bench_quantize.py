#!/usr/bin/env python
"""Benchmark `vqtool quantize` on a full-shape random checkpoint, side by side with the ecosystem path.

Measures wall time, throughput (source MB/s) and peak RSS of each run in a fresh process
(os.wait4 gives each child's own peak), and compares with what people do today where it can run
here: ComfyUI-GGUF's step 1 (safetensors -> F16/BF16 GGUF with gguf-py, which holds every tensor
until it writes) and gguf-py's own quantizer for the one block type both tools have (Q8_0).
Step 2 of that path (a patched llama.cpp b3962 `llama-quantize` for K-quants) cannot be built
here, so K-quant mixtures have no external reference in this table.

    python scripts/bench_quantize.py                                  # Wan2.1 T2V 1.3B, bf16 source
    python scripts/bench_quantize.py --variant wan2.1-t2v-1.3B --dtype f32 --policies mixed-q4,q4_k_m,q8_0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))

GGUF_PY_STEP1 = r"""
import sys, numpy as np, gguf
from safetensors import safe_open
src, dst, qtype = sys.argv[1:4]
w = gguf.GGUFWriter(dst, "wan")
with safe_open(src, "pt") as f:
    for k in f.keys():
        t = f.get_tensor(k)
        if qtype == "F16":
            w.add_tensor(k, t.float().numpy().astype(np.float32 if t.ndim == 1 else np.float16))
        else:
            a = t.float().numpy()
            if a.ndim == 2 and a.shape[-1] % 32 == 0 and "embedding" not in k and "modulation" not in k and not k.startswith("head."):
                w.add_tensor(k, gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0), raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            else:
                w.add_tensor(k, a.astype(np.float32 if a.ndim != 2 else np.float16))
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
"""


def run_measured(cmd: list[str], label: str) -> dict:
    import tempfile

    t = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t
        if status:
            err.seek(0)
            sys.exit(f"{label} failed (status {status}):\n{err.read().decode(errors='replace')[-3000:]}")
    return {"label": label, "seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "stdout": out.decode()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", default="wan2.1-t2v-1.3B")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f16", "f32"])
    ap.add_argument("--policies", default="mixed-q4,q4_k_m")
    ap.add_argument("--workdir", default="/tmp/vqtool-bench")
    ap.add_argument("--skip-reference", action="store_true", help="Do not run the gguf-py reference path.")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    ckpt = os.path.join(args.workdir, f"{args.variant}-{args.dtype}.safetensors")
    if not os.path.exists(ckpt):
        print(f"writing full-shape random checkpoint {ckpt} ...", flush=True)
        subprocess.run([sys.executable, os.path.join(HERE, "make_fullshape_checkpoint.py"), args.variant, "-o", ckpt,
                        "--dtype", args.dtype], check=True)
    from vqtool.io import open_store

    infos = open_store(ckpt).infos()
    src_bytes = sum(i.nbytes for i in infos.values())
    largest = max(i.nbytes for i in infos.values())
    largest_f32 = max(i.numel for i in infos.values()) * 4
    vq = [sys.executable, "-m", "vqtool"]
    rows = []
    baseline = run_measured(vq + ["quantize", ckpt, "--policy", "q4_k_m", "--dry-run"], "vqtool plan only (imports + headers)")
    rows.append(baseline)
    policies = args.policies.split(",")
    for p in policies:
        out = os.path.join(args.workdir, f"vq-{p}.gguf")
        rows.append(run_measured(vq + ["quantize", ckpt, "--policy", p, "-o", out, "--overwrite", "--json"], f"vqtool {p}"))
    if len(policies) > 1:
        tpl = os.path.join(args.workdir, "vq-multi-{policy}.gguf")
        rows.append(run_measured(vq + ["quantize", ckpt, "--policy", args.policies, "-o", tpl, "--overwrite", "--json"],
                                 f"vqtool {args.policies} (one pass)"))
    rows.append(run_measured(vq + ["quantize", ckpt, "--policy", "q8_0", "-o", os.path.join(args.workdir, "vq-q8_0.gguf"),
                                   "--overwrite", "--json"], "vqtool q8_0"))
    if not args.skip_reference:
        for qtype, label in (("F16", "gguf-py step 1: safetensors -> F16 GGUF (ComfyUI convert.py path)"),
                             ("Q8_0", "gguf-py Q8_0 (gguf.quants.quantize)")):
            rows.append(run_measured([sys.executable, "-c", GGUF_PY_STEP1, ckpt, os.path.join(args.workdir, f"ref-{qtype}.gguf"), qtype], label))
    print()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}")
    print(f"source: {args.variant} {args.dtype}, {len(infos)} tensors, {src_bytes / 1e9:.2f} GB; "
          f"largest tensor {largest / 1e6:.1f} MB ({largest_f32 / 1e6:.1f} MB as f32)")
    print(f"{'run':<62} {'wall s':>8} {'MB/s':>8} {'peak RSS MB':>12} {'RSS - plan MB':>14}")
    for r in rows:
        mbps = src_bytes / 1e6 / r["seconds"] if r is not baseline else float("nan")
        extra = r["peak_rss_mb"] - baseline["peak_rss_mb"]
        print(f"{r['label']:<62} {r['seconds']:>8.1f} {mbps:>8.1f} {r['peak_rss_mb']:>12.0f} {extra:>14.0f}")
    print(f"bound for vqtool: 2 x largest f32 tensor = {2 * largest_f32 / 1e6:.0f} MB above the plan-only process")


if __name__ == "__main__":
    main()
