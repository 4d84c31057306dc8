"""Seconds per sampling step and peak accelerator memory of a Wan transformer: BF16 vs GGUF policies,
through vqtool's loader and through diffusers' own GGUF loader, side by side.

Random seeded weights with the released Wan2.1 T2V-1.3B shapes (nothing is downloaded); the
transformer alone is measured (text encoder and VAE are the same in every row and left out).
One step is a conditional and an unconditional forward (classifier-free guidance)::

    python -m reference_infer.bench --device cuda -o /tmp/wan-bench          # 480p, 81 frames
    python -m reference_infer.bench --tiny --device cpu -o /tmp/tiny-bench    # the same code, in seconds

Writes ``bench.json`` into the output folder and prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from typing import Any

LOADERS = ("vqtool", "diffusers")


def build_source(folder: str, tiny: bool, seed: int = 0) -> str:
    """A Diffusers folder (F32 safetensors, like Wan-AI's Diffusers release) of a random Wan T2V transformer.

    F32, not BF16: a GGUF that keeps embeddings in BF16 fails in diffusers' Wan time embedder (it
    casts the timestep to its first parameter's dtype, which for a BF16 GGUF tensor is uint8).
    """
    from vqtool.testing import seeded_, wan

    if os.path.isfile(os.path.join(folder, "config.json")):
        return folder
    config = dict(wan.TINY_TRANSFORMER["t2v"] if tiny else wan.FULL_TRANSFORMER["t2v-1.3B"])
    model = seeded_(wan.transformer_class(config)(**config).eval(), seed, scale=0.02)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(model, device: str, shape: tuple[int, ...], text_dim: int, steps: int, dtype) -> dict[str, Any]:
    """Time ``steps`` CFG steps (after one warm-up step); peak memory on CUDA."""
    import torch

    cuda = device.startswith("cuda")
    weights = torch.cuda.memory_allocated() if cuda else None
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(shape, generator=gen).to(device, dtype)
    cond = torch.randn(1, 512, text_dim, generator=gen).to(device, dtype)
    uncond = torch.randn(1, 512, text_dim, generator=gen).to(device, dtype)
    t = torch.tensor([500], device=device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def step() -> None:
        model(hidden_states=latents, timestep=t, encoder_hidden_states=cond, return_dict=False)
        model(hidden_states=latents, timestep=t, encoder_hidden_states=uncond, return_dict=False)

    with torch.no_grad():
        step()
        _sync(device)
        started = time.perf_counter()
        for _ in range(steps):
            step()
        _sync(device)
    seconds = (time.perf_counter() - started) / steps
    return {"seconds_per_step": round(seconds, 4), "weights_bytes": weights,
            "peak_bytes": torch.cuda.max_memory_allocated() if cuda else None}


def _load(kind: str, path: str, source: str, device: str, dtype):
    from diffusers import GGUFQuantizationConfig, WanTransformer3DModel

    from reference_infer.transformer import load_transformer

    if kind == "full":
        return WanTransformer3DModel.from_pretrained(source, torch_dtype=dtype).to(device).eval()
    if kind == "vqtool":
        return load_transformer(path, dtype=dtype, device=device)
    return WanTransformer3DModel.from_single_file(
        path, quantization_config=GGUFQuantizationConfig(compute_dtype=dtype), config=source,
        torch_dtype=dtype).to(device).eval()


def run_bench(out: str, *, device: str = "cuda", tiny: bool = False, policies: tuple[str, ...] = ("mixed-q4", "q4_k_m"),
              frames: int = 81, height: int = 480, width: int = 832, steps: int = 3) -> dict[str, Any]:
    """Build, quantize and measure; returns (and writes to ``out/bench.json``) one row per model and loader."""
    import torch

    from vqtool.quant.run import quantize_model

    os.makedirs(out, exist_ok=True)
    source = build_source(os.path.join(out, "source"), tiny)
    targets = [(p, os.path.join(out, f"{p}.gguf")) for p in policies]
    missing = [(p, t) for p, t in targets if not os.path.isfile(t)]
    if missing:
        quantize_model(source, missing, device=device if device.startswith("cuda") else None, progress=False)
    with open(os.path.join(source, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    shape = (1, config["in_channels"], (frames - 1) // 4 + 1, height // 8, width // 8)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    runs = [(str(dtype).replace("torch.", ""), "diffusers", source)] + [(p, loader, t) for p, t in targets for loader in LOADERS]
    rows = []
    for policy, loader, path in runs:
        model = _load("full" if path == source else loader, path, source, device, dtype)
        row = {"model": policy, "loader": loader, "file_bytes": _size(path),
               **measure(model, device, shape, config["text_dim"], steps, dtype)}
        rows.append(row)
        del model
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    result = {"device": torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "latents": list(shape), "frames": frames, "height": height, "width": width,
              "steps_timed": steps, "dtype": str(dtype).replace("torch.", ""), "tiny": tiny, "rows": rows}
    with open(os.path.join(out, "bench.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    return result


def _size(path: str) -> int:
    if os.path.isdir(path):
        return sum(os.path.getsize(os.path.join(path, n)) for n in os.listdir(path) if n.endswith(".safetensors"))
    return os.path.getsize(path)


def markdown(result: dict[str, Any]) -> str:
    """The rows as a Markdown table."""
    def gib(b):
        return "-" if b is None else f"{b / 2**30:.2f}"

    lines = ["| model | loader | file GiB | s/step (CFG) | weights GiB | peak GiB |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['model']} | {r['loader']} | {gib(r['file_bytes'])} | {r['seconds_per_step']:.3f} | "
                     f"{gib(r['weights_bytes'])} | {gib(r['peak_bytes'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--out", required=True, help="working folder (source, GGUFs, bench.json)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny model and latents (a CPU smoke run)")
    parser.add_argument("--policies", default="mixed-q4,q4_k_m")
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    args = parser.parse_args(argv)
    result = run_bench(args.out, device=args.device, tiny=args.tiny, policies=tuple(args.policies.split(",")),
                       frames=args.frames, height=args.height, width=args.width, steps=args.steps)
    print(f"{result['device']}, torch {result['torch']}, latents {result['latents']}, {result['dtype']}")
    print(markdown(result))


if __name__ == "__main__":  # pragma: no cover
    main()
