#!/usr/bin/env python
"""Measure the peak RSS of `vqtool sat2hf` (and optionally `hf2sat`) on a SAT folder.

Two fresh child processes: a *baseline* that imports everything, opens the folder and plans the
conversion (``dry_run``; its peak is the constant), and the conversion itself. Peak RSS is the
child's own ``ru_maxrss``. SAT files are zip pickles read memory-mapped, so pages of the source
that were read count as resident until the kernel drops them; the report says so.

    python scripts/make_fullshape_checkpoint.py cogvideox-2b-sat -o /tmp/2b.safetensors --dtype BF16
    # wrap it as transformer/1/mp_rank_00_model_states.pt ({'module': sd}) plus transformer/latest, then:
    python scripts/measure_sat2hf_rss.py /tmp/sat2b -o /tmp/sat2b-diffusers
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys

_CHILD = r"""
import json, re, resource, sys, threading, time
src, out, write = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
peak = {"RssAnon": 0, "RssFile": 0}
done = threading.Event()
def watch():  # Linux: anonymous (heap) vs file-backed (mapped source pages) resident memory
    while not done.wait(0.02):
        status = open("/proc/self/status").read()
        for key in peak:
            peak[key] = max(peak[key], int(re.search(key + r":\s+(\d+)", status).group(1)) * 1024)
threading.Thread(target=watch, daemon=True).start()
from vqtool.sat_convert import sat_to_diffusers
t = time.time()
rep = sat_to_diffusers(src, out, dry_run=not write, progress=False)
done.set()
tr = rep["components"]["transformer"]
print(json.dumps({"peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "peak_anon_bytes": peak["RssAnon"], "peak_file_bytes": peak["RssFile"],
                  "seconds": time.time() - t, "total_bytes": tr["total_bytes"], "tensors": tr["tensors"],
                  "variant": rep["variant"]}))
"""


def _child(src: str, out: str, write: bool) -> dict:
    proc = subprocess.run([sys.executable, "-c", _CHILD, src, out, "1" if write else "0"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _largest_tensor(src: str) -> int:
    from vqtool.sat import open_sat

    store = open_sat(src)["transformer"]
    return max(i.nbytes for i in store.infos().values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sat_dir")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the converted output")
    args = ap.parse_args(argv)
    base = _child(args.sat_dir, args.output, write=False)
    run = _child(args.sat_dir, args.output, write=True)
    largest = _largest_tensor(args.sat_dir)
    if not args.keep:
        shutil.rmtree(args.output, ignore_errors=True)
    mb = 1 / 2**20
    print(json.dumps({**run, "baseline_rss_bytes": base["peak_rss_bytes"], "largest_tensor_bytes": largest}, indent=2))
    print(f"sat2hf {run['variant']}: {run['tensors']} tensors, {run['total_bytes'] / 1e9:.2f} GB in {run['seconds']:.0f} s; "
          f"peak RSS {run['peak_rss_bytes'] * mb:.0f} MiB = baseline {base['peak_rss_bytes'] * mb:.0f} MiB "
          f"+ {(run['peak_rss_bytes'] - base['peak_rss_bytes']) * mb:.0f} MiB (largest tensor {largest * mb:.1f} MiB); "
          f"anonymous peak {run['peak_anon_bytes'] * mb:.0f} MiB (baseline {base['peak_anon_bytes'] * mb:.0f} MiB), "
          f"file-backed (mapped source pages) {run['peak_file_bytes'] * mb:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
