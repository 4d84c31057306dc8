#!/usr/bin/env python
"""Quantization-recovery LoRA and LoRA extraction: measured numbers for docs/benchmarks.md.

Three tables (Markdown on stdout, ``--json`` for rows):

1. Synthetic 1024 x 4096 weights (Gaussian, and with 16 input columns x20), Q4_K and Q4_0:
   relative Frobenius weight error of plain quantization, of vqtool's recovery LoRA (SVD of the
   error, LoRC) at rank 32, and, for comparison only, of an SVDQuant-style split (low-rank part
   first, residual quantized), which vqtool does not write because the GGUF alone would then be
   unusable without its adapter.
2. Tiny Wan T2V and CogVideoX-5B transformers with 8 outlier input columns (x20) in every block
   Linear, every block Linear Q4_K: weight error removed and output PSNR against full precision,
   plain GGUF vs GGUF + recovery LoRA applied by diffusers, at ranks 8 / 16 / 32.
3. SVD time of one layer difference at Wan 1.3B shapes (what ``vqtool lora extract`` costs per layer).

    python scripts/bench_recovery.py            # all three
    python scripts/bench_recovery.py --only synthetic
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time

import numpy as np
import torch


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def quant_roundtrip(w: torch.Tensor, qtype: str) -> torch.Tensor:
    from vqtool import ggml

    raw = ggml.quantize(w.numpy(), qtype)
    return torch.from_numpy(ggml.dequantize(raw, qtype, tuple(w.shape)))


def synthetic(rank: int = 32) -> list[dict]:
    from vqtool.lora.factors import RankRule, low_rank

    rows = []
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(1024, 4096, generator=gen) * 0.02
    outl = base.clone()
    outl[:, torch.randperm(4096, generator=gen)[:16]] *= 20
    for label, w in (("Gaussian", base), ("16 outlier input columns x20", outl)):
        for qtype in ("Q4_K", "Q4_0"):
            wq = quant_roundtrip(w, qtype)
            f = low_rank(w - wq, RankRule(rank=rank))
            lorc = wq + f.up @ f.down
            s = low_rank(w, RankRule(rank=rank))
            split = s.up @ s.down + quant_roundtrip((w - s.up @ s.down).contiguous(), qtype)
            rows.append({"weights": label, "type": qtype, "rank": rank, "plain": rel(wq, w),
                         "recovery_lora": rel(lorc, w), "svdquant_split": rel(split, w)})
    return rows


def _psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    return 10 * math.log10(float(ref.abs().max()) ** 2 / float((x - ref).pow(2).mean()))


def collect_imatrix(model, inputs, path: str, canonical: dict[str, str]) -> None:
    """Mean squared input activation per Linear of ``model`` on ``inputs`` (llama.cpp legacy .dat layout)."""
    import struct

    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and f"{name}.weight" in canonical:
            def hook(m, args, _out, key=canonical[f"{name}.weight"]):
                x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
                sums[key] = x.pow(2).mean(0)
            hooks.append(mod.register_forward_hook(hook))
    with torch.no_grad():
        model(**inputs)
    for h in hooks:
        h.remove()
    with open(path, "wb") as f:
        f.write(struct.pack("<i", len(sums)))
        for key, v in sums.items():
            f.write(struct.pack("<i", len(key.encode())) + key.encode() + struct.pack("<ii", 1, v.numel()))
            f.write(v.float().numpy().tobytes())


def canonical_names(model) -> dict[str, str]:
    """Diffusers parameter name -> vqtool canonical name (through the mapping tables)."""
    from vqtool.mapping import identify
    from vqtool.testing import DictStore

    ident = identify(DictStore({k: v for k, v in model.state_dict().items()}))
    return {g.external[0]: g.canonical[0] for g in ident.side.groups if g.transform is None}


def tiny_models(ranks=(8, 16, 32)) -> list[dict]:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
    from diffusers import CogVideoXPipeline, WanPipeline
    from safetensors.torch import save_file
    from test_lora_recovery import with_outlier_columns

    from vqtool.loader import load_gguf_transformer
    from vqtool.lora.recovery import make_builders, write_recovery
    from vqtool.quant.run import quantize_model
    from vqtool.testing import cogvideox, wan

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        wan_model = with_outlier_columns(wan.build_transformer("t2v", seed=0), seed=3, prefix="blocks.")
        original = wan.to_format({k: v.detach() for k, v in wan_model.state_dict().items()}, "original")
        save_file({k: v.contiguous() for k, v in original.items()}, os.path.join(tmp, "wan.safetensors"))
        gen = torch.Generator().manual_seed(5)
        wan_inputs = dict(hidden_states=torch.randn(1, 16, 2, 8, 8, generator=gen), timestep=torch.tensor([500]),
                          encoder_hidden_states=torch.randn(1, 8, 64, generator=gen), return_dict=False)
        cog_model = with_outlier_columns(cogvideox.build_transformer("5b", seed=0), seed=4, prefix="transformer_blocks.")
        cogvideox.save_diffusers(cog_model, os.path.join(tmp, "cog"))
        cases = [("Wan T2V tiny (dim 256, 2 blocks)", os.path.join(tmp, "wan.safetensors"), wan_model, wan_inputs,
                  WanPipeline, "blocks.*=Q4_K"),
                 ("CogVideoX-5B tiny (dim 256, 2 blocks)", os.path.join(tmp, "cog"), cog_model,
                  cogvideox.transformer_inputs(cog_model), CogVideoXPipeline, "transformer_blocks.*=Q4_K")]
        for label, src, model, inputs, pipe_cls, override in cases:
            with torch.no_grad():
                ref = model(**inputs)[0]
            imatrix = os.path.join(tmp, "imatrix.dat")
            collect_imatrix(model, inputs, imatrix, canonical_names(model))
            for rank, weighting in [(r, None) for r in ranks] + [(r, imatrix) for r in ranks]:
                targets = [("q4_k_s", os.path.join(tmp, f"q-{rank}.gguf"))]
                builders, hook = make_builders(rank, targets, overwrite=True, imatrix=weighting)
                run = quantize_model(src, targets, overrides=[override], hash_sources=False, progress=False,
                                     on_tensor=hook, overwrite=True, imatrix=weighting)
                rec = write_recovery(run, builders, overwrite=True)[0]
                with torch.no_grad():
                    plain = load_gguf_transformer(targets[0][1])(**inputs)[0]
                    pipe = pipe_cls(tokenizer=None, text_encoder=None, vae=None, scheduler=None,
                                    transformer=load_gguf_transformer(targets[0][1]))
                    pipe.load_lora_weights(rec["path"])
                    recovered = pipe.transformer(**inputs)[0]
                a = rec["by_role"]["all"]
                rows.append({"model": label, "rank": rank, "imatrix": bool(weighting), "layers": a["layers"], "weight_error_plain": a["before"],
                             "weight_error_recovered": a["after"], "removed": a["removed"],
                             "psnr_plain": _psnr(plain, ref), "psnr_recovered": _psnr(recovered, ref),
                             "lora_bytes": rec["bytes"]})
    return rows


def svd_timing() -> list[dict]:
    from vqtool.lora.factors import RankRule, low_rank

    rows = []
    gen = torch.Generator().manual_seed(0)
    default = torch.get_num_threads()
    for threads in sorted({1, default}):
        torch.set_num_threads(threads)
        for label, shape in (("Wan 1.3B attention", (1536, 1536)), ("Wan 1.3B FFN up", (8960, 1536))):
            d = torch.randn(*shape, generator=gen) * 1e-3
            t = time.perf_counter()
            low_rank(d, RankRule(rank=32))
            rows.append({"layer": label, "shape": list(shape), "seconds": time.perf_counter() - t, "threads": threads})
    torch.set_num_threads(default)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["synthetic", "tiny", "svd"])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = {}
    if args.only in (None, "synthetic"):
        out["synthetic"] = synthetic()
    if args.only in (None, "tiny"):
        out["tiny"] = tiny_models()
    if args.only in (None, "svd"):
        out["svd"] = svd_timing()
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"<!-- {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}, torch {torch.__version__}, numpy {np.__version__} -->")
    if "synthetic" in out:
        print("\n| weights (1024 x 4096) | type | plain | + recovery LoRA r32 | SVDQuant-style split r32 (not written) |")
        print("|---|---|---|---|---|")
        for r in out["synthetic"]:
            print(f"| {r['weights']} | {r['type']} | {100 * r['plain']:.2f} % | {100 * r['recovery_lora']:.2f} % "
                  f"| {100 * r['svdquant_split']:.2f} % |")
    if "tiny" in out:
        print("\n| model | rank | imatrix | quantized layers | weight error plain -> with LoRA | removed | PSNR plain | PSNR with LoRA | LoRA size |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in out["tiny"]:
            print(f"| {r['model']} | {r['rank']} | {'yes' if r['imatrix'] else 'no'} | {r['layers']} | {100 * r['weight_error_plain']:.2f} % -> "
                  f"{100 * r['weight_error_recovered']:.2f} % | {100 * r['removed']:.1f} % | {r['psnr_plain']:.2f} dB "
                  f"| {r['psnr_recovered']:.2f} dB | {r['lora_bytes'] / 1024:.0f} KiB |")
    if "svd" in out:
        print("\n| layer difference | shape | SVD + rank-32 factors | torch threads |")
        print("|---|---|---|---|")
        for r in out["svd"]:
            print(f"| {r['layer']} | {r['shape'][0]} x {r['shape'][1]} | {r['seconds']:.2f} s | {r['threads']} |")


if __name__ == "__main__":
    main()
