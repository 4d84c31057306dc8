#!/usr/bin/env python
"""Measure the peak RSS of `vqtool convert` against 2x its largest tensor plus a constant.

Runs two fresh child processes: a *baseline* that imports everything, opens the source and plans
the conversion without writing (its peak RSS is the constant: interpreter, torch, tables), and the
*conversion* itself. Peak RSS is each child's own ``ru_maxrss``.

    python scripts/make_fullshape_checkpoint.py wan2.1-t2v-1.3B -o /tmp/wan13b.safetensors
    python scripts/measure_convert_rss.py /tmp/wan13b.safetensors --to diffusers -o /tmp/wan13b-diffusers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

_CHILD = r"""
import json, resource, sys, time
src, out, to, write = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
from vqtool.mapping.convert import convert
t = time.time()
res = convert(src, out, to=to, dry_run=not write, progress=False)
c = res["components"][0]
print(json.dumps({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "seconds": time.time() - t, "largest_tensor_bytes": c["largest_tensor_bytes"],
                  "total_bytes": c["total_bytes"], "tensors": c["tensors"], "variant": c["variant"]}))
"""


def _child(src: str, out: str, to: str, write: bool) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, src, out, to, "1" if write else "0"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("--to", default="diffusers")
    ap.add_argument("-o", "--output", help="where to write (default: SRC + '.converted'; removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the converted output")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    out = args.output or args.src.rstrip("/") + ".converted"
    if os.path.exists(out):
        raise SystemExit(f"{out} exists; remove it or pass another -o")
    base = _child(args.src, out, args.to, write=False)
    conv = _child(args.src, out, args.to, write=True)
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True) if os.path.isdir(out) else os.remove(out)
    largest, constant, peak = conv["largest_tensor_bytes"], base["peak_rss_bytes"], conv["peak_rss_bytes"]
    report = {
        "source": args.src, "to": args.to, "variant": conv["variant"], "tensors": conv["tensors"],
        "total_bytes": conv["total_bytes"], "largest_tensor_bytes": largest, "baseline_rss_bytes": constant,
        "peak_rss_bytes": peak, "peak_minus_baseline_bytes": peak - constant, "bound_bytes": 2 * largest + constant,
        "within_bound": peak <= 2 * largest + constant, "seconds": round(conv["seconds"], 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "date": time.strftime("%Y-%m-%d"),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        mb = 1e6
        print(f"{report['variant']}: {report['tensors']} tensors, {report['total_bytes'] / 1e9:.2f} GB, "
              f"largest tensor {largest / mb:.1f} MB")
        print(f"peak RSS {peak / mb:.0f} MB = baseline {constant / mb:.0f} MB + {(peak - constant) / mb:.0f} MB "
              f"(bound 2 x largest + baseline = {(2 * largest + constant) / mb:.0f} MB): "
              f"{'OK' if report['within_bound'] else 'OVER'}; {report['seconds']} s")
    return 0 if report["within_bound"] else 1


if __name__ == "__main__":
    sys.exit(main())
