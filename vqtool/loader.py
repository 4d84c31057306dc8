"""vqtool's own GGUF loader: a vqtool GGUF file -> the Diffusers transformer, weights kept quantized.

Linear layers whose weight is block-quantized become diffusers' ``GGUFLinear`` (the raw
blocks stay in memory and are dequantized on the fly in each forward), so a Q4 model
really uses Q4 memory. Names are mapped to Diffusers through the family's tables, so
this loads Wan (original names) and CogVideoX (Diffusers names; diffusers has no
single-file loader for it) alike; the Diffusers config comes from the file's own
``vqtool.*`` metadata, no config folder needed.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from vqtool.errors import DetectionError, MappingError

if TYPE_CHECKING:  # pragma: no cover
    import torch


def diffusers_names(path: str) -> tuple[dict[str, str], dict]:
    """GGUF tensor name -> Diffusers name, and the Diffusers config, from headers only."""
    from vqtool.io import GGUFFile
    from vqtool.mapping import identify, plan_conversion

    store = GGUFFile(path)
    ident = identify(store)
    if ident is None:
        raise DetectionError("no mapping table recognises these tensor names", path=path)
    plan = plan_conversion(store, "diffusers", ident=ident)
    rename: dict[str, str] = {}
    for unit in plan.units:
        to_canonical: dict[str, str] = {}
        for g in unit.source:
            if g.transform is not None:
                raise MappingError(f"{g.external} need a transform to reach Diffusers; load with dequantize instead", path=path)
            to_canonical.update(zip(g.external, g.canonical))
        from_canonical: dict[str, str] = {}
        for g in unit.target:
            if g.transform is not None:
                raise MappingError(f"{g.canonical} need a transform to reach Diffusers", path=path)
            from_canonical.update(zip(g.canonical, g.external))
        rename.update({src: from_canonical[can] for src, can in to_canonical.items()})
    if plan.config_json is None:
        raise MappingError("the Diffusers table declares no config for this model", path=path)
    return rename, plan.config_json


def _config(path: str, derived: dict, given: dict | str | None) -> dict:
    """The Diffusers config: ``given`` (dict or folder) > the source's config.json kept in the file > derived."""
    import json

    if isinstance(given, (str, os.PathLike)):
        with open(os.path.join(given, "config.json") if os.path.isdir(given) else given, encoding="utf-8") as f:
            given = json.load(f)
    if given:
        return {**derived, **given}
    from vqtool.io import GGUFFile

    kept = GGUFFile(path).metadata.get("vqtool.source_config")
    if kept:
        source = json.loads(kept)
        if source.get("_class_name") == derived.get("_class_name"):
            return {**derived, **source}
    return derived


def load_gguf_transformer(path: str | os.PathLike, *, compute_dtype: "torch.dtype | None" = None, device: str = "cpu",
                          config: dict | str | None = None):
    """The Diffusers transformer in ``path`` (a vqtool or ComfyUI-style GGUF), quantized weights kept raw.

    ``compute_dtype`` is what dequantized weights and activations use (default float32 on
    CPU, bfloat16 on CUDA). ``config`` (a dict, a config.json or a Diffusers folder) overrides
    the config that vqtool derives from the file (sizes that shapes cannot tell, such as the
    sample size, come from the source's config.json when vqtool wrote the file from one).
    """
    import diffusers
    import torch
    from accelerate import init_empty_weights
    from diffusers.models.model_loading_utils import load_gguf_checkpoint
    from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter, _replace_with_gguf_linear, dequantize_gguf_tensor
    from gguf import GGMLQuantizationType

    path = os.fspath(path)
    if compute_dtype is None:
        compute_dtype = torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    rename, derived = diffusers_names(path)
    config = _config(path, derived, config)
    parsed = load_gguf_checkpoint(path, return_tensors=True)
    state = {}
    for name, value in parsed.items():
        target = rename[name]
        if isinstance(value, GGUFParameter) and value.quant_type == GGMLQuantizationType.BF16:
            # BF16 is not a block type: as raw bytes it would make its module's dtype uint8
            # (Wan's time embedder casts the timestep to it), and dequantizing saves nothing.
            value = dequantize_gguf_tensor(value)
        if not isinstance(value, GGUFParameter) and value.is_floating_point():
            value = value.to(compute_dtype)
        state[target] = value
    cls = getattr(diffusers, config["_class_name"])
    with init_empty_weights(include_buffers=False):
        model = cls.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    _replace_with_gguf_linear(model, compute_dtype, state)
    expected = dict(model.named_parameters())
    expected.update({n: b for n, b in model.named_buffers() if n in model.state_dict()})
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    if missing or unexpected:
        raise MappingError(
            f"GGUF does not fit {cls.__name__}: missing {missing[:5]}, unexpected {unexpected[:5]}", path=path
        )
    for name, value in state.items():
        # Assigned directly: quantized parameters hold raw block bytes, whose shape is not the logical one.
        owner, _, leaf = name.rpartition(".")
        module = model.get_submodule(owner) if owner else model
        if isinstance(value, GGUFParameter) and not isinstance(module, GGUFLinear):
            # e.g. a BF16 Conv2d patch embedding: only Linear layers dequantize on the fly
            value = dequantize_gguf_tensor(value).to(compute_dtype)
        if leaf in module._parameters:
            module._parameters[leaf] = value if isinstance(value, GGUFParameter) else torch.nn.Parameter(value, requires_grad=False)
        else:
            module._buffers[leaf] = value
    return model.to(device).eval()
