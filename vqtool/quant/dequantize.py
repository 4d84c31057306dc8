"""GGUF -> safetensors, through the mapping engine (any naming the family's tables know)."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

DTYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16"}


def dequantize_file(src: str, out: str, *, to: str | None = None, dtype: str = "auto", max_shard_size="5GB",
                    overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Write ``src`` (GGUF) dequantized as safetensors named for format ``to`` (default: as stored)."""
    from vqtool.io import open_store
    from vqtool.io.base import torch_dtype
    from vqtool.mapping import identify, iter_converted, plan_conversion
    from vqtool.mapping.writer import write_tensors
    from vqtool.errors import DetectionError

    with open_store(src) as store:
        ident = identify(store)
        if ident is None:
            raise DetectionError("no mapping table recognises these tensor names", path=src)
        target = to or ident.table.format
        plan = plan_conversion(store, target, ident=ident)
        float_types = {"F32", "F16", "BF16"}
        want = DTYPES.get(dtype)
        tensors = [replace(t, dtype=want) if want and t.dtype in float_types else t for t in plan.tensors]
        items = (
            (name, tensor.to(torch_dtype(planned.dtype)) if tensor.is_floating_point() else tensor)
            for (name, tensor), planned in zip(iter_converted(store, plan), tensors)
        )
        config = plan.config_json if not os.fspath(out).endswith(".safetensors") else None
        result = write_tensors(items, tensors, os.fspath(out), basename=plan.target_table.basename,
                               max_shard_size=max_shard_size, overwrite=overwrite, config_json=config,
                               progress=progress)
    return {"source": src, "to": target, "tensors": result.tensors, "bytes": result.total_bytes,
            "files": result.files, "config": result.config}
