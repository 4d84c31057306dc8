"""Load the transformer a run compares: full precision from any format vqtool reads, or a vqtool GGUF.

Full-precision weights are mapped to Diffusers names through vqtool's tables (streaming, one
conversion unit at a time) and assigned into the Diffusers model class, so a Diffusers
folder, an original Wan file, a ComfyUI file or a SAT checkpoint all become the same module.
GGUF files go through vqtool's own loader (:func:`vqtool.loader.load_gguf_transformer`):
block-quantized Linear weights stay quantized in memory and are dequantized on the fly.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vqtool.errors import InputError, MappingError

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)


@dataclass
class WeightsInfo:
    """What was loaded: path, format, family/variant and, for GGUF files, the policy and size."""

    path: str
    format: str
    family: str | None = None
    variant: str | None = None
    policy: str | None = None
    file_bytes: int = 0
    params: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def bits_per_weight(self) -> float | None:
        return round(8 * self.file_bytes / self.params, 3) if self.params else None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "format": self.format, "family": self.family, "variant": self.variant,
                "policy": self.policy, "file_bytes": self.file_bytes, "params": self.params,
                "bits_per_weight": self.bits_per_weight}


def is_gguf(path: str | os.PathLike) -> bool:
    path = os.fspath(path)
    if not os.path.isfile(path):
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def transformer_store(path: str | os.PathLike):
    """The transformer's store in ``path`` (a file, a model folder, or a pipeline/SAT/Wan folder)."""
    from vqtool.io import open_checkpoint
    from vqtool.publish.torchao_export import is_torchao_folder

    if is_torchao_folder(path):  # a torchao export: served dequantized under Diffusers names
        from vqtool.publish.torchao_store import TorchaoStore

        return TorchaoStore(path)
    ckpt = open_checkpoint(path)
    names = list(ckpt.components)
    pick = "transformer" if "transformer" in ckpt.components else (names[0] if len(names) == 1 else None)
    if pick is None:
        ckpt.close()
        raise InputError(f"holds no transformer (components: {', '.join(names)})", path=os.fspath(path))
    for name, store in ckpt.components.items():
        if name != pick:
            store.close()
    return ckpt.components[pick]


def describe(path: str | os.PathLike) -> WeightsInfo:
    """Headers-only description of a transformer checkpoint (any format, GGUF included)."""
    from vqtool.mapping import identify

    path = os.fspath(path)
    with transformer_store(path) as store:
        ident = identify(store)
        info = WeightsInfo(path, store.format)
        if ident is not None:
            info.family, info.variant = ident.graph.family, ident.graph.variant
            info.params = ident.graph.num_params()
        info.file_bytes = sum(os.path.getsize(f) for f in store.files if os.path.isfile(f))
        if store.format in ("gguf", "torchao"):
            meta = store.metadata
            info.policy = meta.get("vqtool.policy.name")
            # What quantize knew from the source's config beats what shapes alone tell (CogVideoX 2B vs 5B).
            info.family = meta.get("vqtool.family", info.family)
            info.variant = meta.get("vqtool.variant", info.variant)
            info.metadata = {k: v for k, v in meta.items()
                             if k.startswith(("general.", "vqtool.version", "vqtool.family", "vqtool.variant",
                                              "vqtool.policy.name", "vqtool.source_format"))}
    return info


def _diffusers_config(store, derived: dict[str, Any] | None) -> dict[str, Any]:
    """A Diffusers folder's own config.json when it describes the same class, else the derived one."""
    own = store.config or {}
    if derived is None and not own:
        raise MappingError("no Diffusers config for this transformer; pass a Diffusers folder", path=store.path)
    if derived is None:
        return dict(own)
    if own.get("_class_name") == derived.get("_class_name"):
        return {**derived, **own}
    return derived


def load_full_precision(path: str | os.PathLike, *, dtype: "torch.dtype", device: str = "cpu"):
    """The Diffusers transformer of ``path`` (any full-precision format), weights cast to ``dtype``."""
    import diffusers
    from accelerate import init_empty_weights

    from vqtool.mapping import iter_converted, plan_conversion

    with transformer_store(path) as store:
        plan = plan_conversion(store, "diffusers")
        config = _diffusers_config(store, plan.config_json)
        cls = getattr(diffusers, config["_class_name"])
        with init_empty_weights(include_buffers=False):
            model = cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})
        state = {}
        for name, tensor in iter_converted(store, plan):
            state[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    if missing or unexpected:
        raise MappingError(f"weights do not fit {cls.__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}",
                           path=os.fspath(path))
    model.requires_grad_(False)
    return model.to(device=device).eval()


def load_transformer(path: str | os.PathLike, *, dtype: "torch.dtype", device: str = "cpu",
                     config: dict[str, Any] | None = None):
    """The transformer in ``path``: GGUF through vqtool's loader (weights stay quantized), else full precision.

    ``dtype`` is the compute dtype: full-precision weights are cast to it; GGUF weights are
    dequantized to it in each forward. ``config`` (the reference's Diffusers config) makes
    a GGUF candidate take exactly the reference's architecture settings.
    """
    from vqtool.loader import load_gguf_transformer
    from vqtool.publish.torchao_export import is_torchao_folder, load_torchao_transformer

    path = os.fspath(path)
    if is_gguf(path):
        model = load_gguf_transformer(path, compute_dtype=dtype, device=device, config=config)
    elif is_torchao_folder(path):  # vqtool quantize --format torchao: torchao weights, the rest in ``dtype``
        model = load_torchao_transformer(path, dtype=dtype, device=device)
    else:
        model = load_full_precision(path, dtype=dtype, device=device)
    log.info("loaded %s transformer from %s", type(model).__name__, path)
    return model
