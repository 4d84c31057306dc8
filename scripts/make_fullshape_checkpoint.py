#!/usr/bin/env python
"""Write a full-shape random checkpoint (released key names and shapes, random values) for benchmarks.

Streams one tensor at a time through vqtool's safetensors writer, so it needs about one tensor of
memory whatever the model size. Shapes come from meta-device models (no allocation) renamed into
the upstream layout by vqtool's own tables. Values are seeded per tensor name (reproducible).

    python scripts/make_fullshape_checkpoint.py --list
    python scripts/make_fullshape_checkpoint.py wan2.1-t2v-1.3B -o /tmp/wan13b.safetensors
    python scripts/make_fullshape_checkpoint.py wan2.1-vace-14B -o /tmp/vace14b/ --dtype bf16 --max-shard-size 10GB

Other families add variants with :func:`register_variant` (a function returning
``[(name, shape), ...]`` in file order).
"""

from __future__ import annotations

import argparse
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class FullShapeVariant:
    tensors: Callable[[], list[tuple[str, tuple[int, ...]]]]
    basename: str
    note: str


VARIANTS: dict[str, FullShapeVariant] = {}


def register_variant(name: str, tensors: Callable[[], list[tuple[str, tuple[int, ...]]]], *, basename: str,
                     note: str) -> None:
    """Register a variant by name; a second registration of the same name is an error."""
    if name in VARIANTS:
        raise ValueError(f"full-shape variant {name!r} is already registered")
    VARIANTS[name] = FullShapeVariant(tensors, basename, note)


def _upstream_layout(kind: str, name: str) -> Callable[[], list[tuple[str, tuple[int, ...]]]]:
    def tensors() -> list[tuple[str, tuple[int, ...]]]:
        from vqtool.mapping import plan_conversion
        from vqtool.testing import DictStore
        from vqtool.testing.wan import meta_state_dict

        plan = plan_conversion(DictStore(meta_state_dict(kind, name)), "original")
        return [(t.name, t.shape) for t in plan.tensors]

    return tensors


for _name, _note in (("t2v-1.3B", "825 tensors, 1.419 B params"), ("t2v-14B", "1095 tensors, 14.289 B params"),
                     ("i2v-14B", "1303 tensors, 16.395 B params"), ("flf2v-14B", "1304 tensors"),
                     ("vace-1.3B", "1264 tensors, 2.154 B params"), ("vace-14B", "1331 tensors, 17.338 B params")):
    register_variant(f"wan2.1-{_name}", _upstream_layout("transformer", _name), basename="diffusion_pytorch_model",
                     note=f"Wan2.1 {_name} transformer, upstream names ({_note})")
register_variant("wan2.1-vae", _upstream_layout("vae", ""), basename="Wan2.1_VAE",
                 note="Wan2.1 VAE, upstream names (194 tensors, 126.9 M params)")
register_variant("umt5-xxl", _upstream_layout("umt5", ""), basename="models_t5_umt5-xxl-enc-bf16",
                 note="UMT5-XXL encoder, Wan's names (242 tensors, 5.681 B params)")


def _cogvideox_sat(variant: str | None) -> Callable[[], list[tuple[str, tuple[int, ...]]]]:
    def tensors() -> list[tuple[str, tuple[int, ...]]]:
        from vqtool.testing import cogvideox

        return cogvideox.fullshape_vae_sat_tensors() if variant is None else cogvideox.fullshape_sat_tensors(variant)

    return tensors


# CogVideoX in SAT names (the keys of mp_rank_00_model_states.pt / 3d-vae.pt), written as safetensors.
for _name, _note in (("2b", "556 tensors, 1.69 B params"), ("5b", "775 tensors, 5.57 B params"),
                     ("5b-i2v", "776 tensors, 5.63 B params"), ("1.5", "773 tensors, 5.57 B params"),
                     ("1.5-i2v", "777 tensors, 5.57 B params")):
    register_variant(f"cogvideox-{_name}-sat", _cogvideox_sat(_name), basename="mp_rank_00_model_states",
                     note=f"CogVideoX {_name} transformer, SAT names with model.diffusion_model. ({_note})")
register_variant("cogvideox-vae-sat", _cogvideox_sat(None), basename="3d-vae",
                 note="CogVideoX VAE, SAT names (436 tensors, 215.6 M params)")


def random_tensors(spec: list[tuple[str, tuple[int, ...]]], dtype: str, seed: int):
    """Yield ``(name, tensor)`` with values drawn from a generator seeded by ``seed`` and the name."""
    import torch

    from vqtool.io.base import torch_dtype

    for name, shape in spec:
        gen = torch.Generator().manual_seed(seed ^ zlib.crc32(name.encode()))
        t = torch.randn(shape, generator=gen, dtype=torch.float32).mul_(0.02)
        yield name, t.to(torch_dtype(dtype))
        del t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variant", nargs="?", help="a registered variant (see --list)")
    ap.add_argument("-o", "--output", help="a .safetensors file or a folder")
    ap.add_argument("--dtype", default="F32", help="F32 (like the released Wan2.1 files), BF16 or F16")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-shard-size", default="100GB", help="shard past this size (default: one file)")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--list", action="store_true", help="list the variants")
    args = ap.parse_args(argv)
    if args.list or not args.variant:
        for name, v in VARIANTS.items():
            print(f"{name:20s} {v.note}")
        return 0
    if args.variant not in VARIANTS or not args.output:
        ap.error(f"need a known variant ({', '.join(VARIANTS)}) and -o")
    from vqtool.mapping.plan import PlannedTensor
    from vqtool.mapping.writer import write_tensors

    variant = VARIANTS[args.variant]
    dtype = args.dtype.upper()
    spec = variant.tensors()
    planned = [PlannedTensor(n, tuple(s), dtype, ()) for n, s in spec]
    res = write_tensors(random_tensors(spec, dtype, args.seed), planned, args.output, basename=variant.basename,
                        max_shard_size=args.max_shard_size, overwrite=args.overwrite,
                        metadata={"vqtool.random_fullshape": args.variant})
    print(f"{args.variant}: {res.tensors} tensors, {res.total_bytes / 1e9:.2f} GB, "
          f"largest {max(p.nbytes for p in planned) / 1e6:.1f} MB -> {', '.join(res.files)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
