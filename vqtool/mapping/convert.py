"""``vqtool convert`` as a library function: any supported input -> Diffusers or upstream layout.

Example::

    from vqtool.mapping.convert import convert
    convert("Wan2.1-T2V-1.3B/", "out/", to="diffusers")          # transformer/, vae/, text_encoder/
    convert("wan_comfy.safetensors", "wan.safetensors", to="original", prefix="model.diffusion_model.")
"""

from __future__ import annotations

import logging
import os
from typing import Any

from vqtool.errors import DetectionError, InputError

log = logging.getLogger(__name__)

# io component names that are only placeholders ("model": a single file of unknown role).
_UNNAMED = ("model",)


def convert(src: str | os.PathLike, out: str | os.PathLike, *, to: str, component: str | None = None,
            dry_run: bool = False, overwrite: bool = False, max_shard_size: int | str = "5GB",
            prefix: str = "", progress: bool = True) -> dict[str, Any]:
    """Convert every component of ``src`` (or just ``component``) to format ``to``, streaming.

    One component: ``out`` is its folder (or a ``.safetensors`` file path). Several components:
    ``out/<component>/`` each. Returns a JSON-ready summary; with ``dry_run`` only the plans.
    """
    from vqtool.io import open_checkpoint
    from vqtool.mapping import identify, plan_conversion
    from vqtool.mapping.writer import parse_size, write_plan

    shard_bytes = parse_size(max_shard_size)
    results = []
    with open_checkpoint(src) as ckpt:
        stores = dict(ckpt.components)
        if component is not None:
            if component in stores:
                stores = {component: stores[component]}
            elif len(stores) == 1 and next(iter(stores)) in _UNNAMED:
                stores = {component: next(iter(stores.values()))}
            else:
                raise InputError(f"no component {component!r} here; it has: {', '.join(stores)}", path=src)
        if not stores:
            raise InputError("no weights found", path=src)
        for name, store in stores.items():
            hint = None if name in _UNNAMED else name
            ident = identify(store, component=hint)
            if ident is None:
                raise DetectionError(
                    f"component {name!r}: no mapping table recognises its tensor names; "
                    "run `vqtool inspect` to see them, or pick the others with --component", path=store.path)
            plan = plan_conversion(store, to, prefix=prefix, ident=ident)
            target = os.fspath(out) if len(stores) == 1 else os.path.join(os.fspath(out), plan.component)
            summary = {"component": plan.component, "source": store.path, "output": target,
                       **{k: v for k, v in plan.to_dict().items() if k != "tensors"},
                       "tensors": len(plan.tensors), "largest_tensor_bytes": plan.largest_bytes}
            if dry_run:
                summary["plan"] = plan.to_dict()["tensors"]
            else:
                log.info("converting %s (%s %s, %s -> %s) into %s", name, plan.family, plan.variant,
                         plan.source_format, to, target)
                summary["written"] = write_plan(store, plan, target, max_shard_size=shard_bytes,
                                                overwrite=overwrite, progress=progress).to_dict()
            results.append(summary)
    return {"source": os.fspath(src), "to": to, "dry_run": dry_run, "components": results}
