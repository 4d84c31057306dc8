"""Deterministic tiny random Wan2.1 models (transformer T2V / I2V / FLF2V / VACE, VAE, UMT5) in every format.

Builders return real diffusers / transformers modules, seeded, float32, every parameter re-drawn
(:func:`vqtool.testing.seeded_`). Writers put a model on disk in each layout vqtool reads:

- ``diffusers``: ``save_pretrained`` folder (config.json + safetensors);
- ``original``: one safetensors file with upstream names (``.pth`` for the VAE and UMT5);
- ``original-sharded``: two safetensors shards plus ``*.safetensors.index.json``;
- ``comfy``: one safetensors file with the ``model.diffusion_model.`` prefix (transformer only);
- :func:`write_wan_folder`: an original Wan folder (transformer + config.json, ``Wan2.1_VAE.pth``,
  ``models_t5_umt5-xxl-enc-bf16.pth``).

Upstream names are produced through vqtool's own mapping; tests check them against diffusers'
converters and the reference key lists, which are independent of it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from vqtool.testing import DictStore, seeded_

TRANSFORMER_VARIANTS = ("t2v", "i2v", "flf2v", "vace")
COMFY_PREFIX = "model.diffusion_model."

# Width 256 (2 heads of 128, like every Wan2.1 model) so K-quants (256-wide blocks) apply.
_TINY_COMMON: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=64, freq_dim=256, ffn_dim=512, num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    eps=1e-6, rope_max_seq_len=1024,
)
TINY_TRANSFORMER: dict[str, dict[str, Any]] = {
    "t2v": dict(_TINY_COMMON),
    "i2v": dict(_TINY_COMMON, in_channels=36, image_dim=64, added_kv_proj_dim=256),
    "flf2v": dict(_TINY_COMMON, in_channels=36, image_dim=64, added_kv_proj_dim=256, pos_embed_seq_len=8),
    "vace": dict(_TINY_COMMON, num_layers=4, vace_layers=[0, 2], vace_in_channels=96),
}

# Released configs (diffusers Wan-AI/Wan2.1-*-Diffusers transformer/config.json; reference doc §4.1).
_FULL_13 = dict(_TINY_COMMON, num_attention_heads=12, text_dim=4096, ffn_dim=8960, num_layers=30)
_FULL_14 = dict(_TINY_COMMON, num_attention_heads=40, text_dim=4096, ffn_dim=13824, num_layers=40)
FULL_TRANSFORMER: dict[str, dict[str, Any]] = {
    "t2v-1.3B": _FULL_13,
    "t2v-14B": _FULL_14,
    "i2v-14B": dict(_FULL_14, in_channels=36, image_dim=1280, added_kv_proj_dim=5120),
    "flf2v-14B": dict(_FULL_14, in_channels=36, image_dim=1280, added_kv_proj_dim=5120, pos_embed_seq_len=514),
    "vace-1.3B": dict(_FULL_13, vace_layers=list(range(0, 30, 2)), vace_in_channels=96),
    "vace-14B": dict(_FULL_14, vace_layers=list(range(0, 40, 5)), vace_in_channels=96),
}

TINY_VAE: dict[str, Any] = dict(base_dim=32, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                                attn_scales=[], temperal_downsample=[False, True, True])
FULL_VAE: dict[str, Any] = dict(TINY_VAE, base_dim=96)

TINY_UMT5: dict[str, Any] = dict(vocab_size=128, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                                 relative_attention_num_buckets=32, feed_forward_proj="gated-gelu",
                                 is_encoder_decoder=False, dropout_rate=0.0, tie_word_embeddings=True)
FULL_UMT5: dict[str, Any] = dict(TINY_UMT5, vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24,
                                 num_heads=64)


def transformer_class(config: dict[str, Any]):
    from diffusers import WanTransformer3DModel, WanVACETransformer3DModel

    return WanVACETransformer3DModel if "vace_layers" in config else WanTransformer3DModel


def build_transformer(variant: str = "t2v", seed: int = 0, config: dict[str, Any] | None = None) -> torch.nn.Module:
    """A tiny random Wan transformer (``variant`` in TRANSFORMER_VARIANTS), eval mode, float32."""
    config = dict(config or TINY_TRANSFORMER[variant])
    model = transformer_class(config)(**config)
    return seeded_(model.eval(), seed)


def build_vae(seed: int = 0, config: dict[str, Any] | None = None) -> torch.nn.Module:
    from diffusers import AutoencoderKLWan

    return seeded_(AutoencoderKLWan(**(config or TINY_VAE)).eval(), seed)


def build_umt5(seed: int = 0, config: dict[str, Any] | None = None) -> torch.nn.Module:
    from transformers import UMT5Config, UMT5EncoderModel

    model = UMT5EncoderModel(UMT5Config(**(config or TINY_UMT5))).eval()
    seeded_(model, seed)
    model.encoder.embed_tokens.weight = model.shared.weight  # keep the tie after re-drawing
    return model


def meta_state_dict(kind: str, name: str) -> dict[str, torch.Tensor]:
    """Full-shape state dict of a released model on the meta device (no memory): kind transformer/vae/umt5."""
    with torch.device("meta"):
        if kind == "transformer":
            model = transformer_class(FULL_TRANSFORMER[name])(**FULL_TRANSFORMER[name])
        elif kind == "vae":
            from diffusers import AutoencoderKLWan

            model = AutoencoderKLWan(**FULL_VAE)
        else:
            from transformers import UMT5Config, UMT5EncoderModel

            model = UMT5EncoderModel(UMT5Config(**FULL_UMT5))
    return dict(model.state_dict())


def to_format(state_dict: dict[str, torch.Tensor], fmt: str, *, prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename a state dict into another layout through vqtool's mapping (``original`` / ``diffusers``)."""
    from vqtool.mapping import iter_converted, plan_conversion

    store = DictStore(state_dict)
    plan = plan_conversion(store, fmt, prefix=prefix)
    return {name: t.clone() for name, t in iter_converted(store, plan)}


def _save_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def save_sharded(tensors: dict[str, torch.Tensor], folder: Path, basename: str, shards: int = 2) -> Path:
    """Split ``tensors`` into ``shards`` safetensors files plus a Diffusers-style index; returns the index path."""
    folder.mkdir(parents=True, exist_ok=True)
    names = list(tensors)
    per = -(-len(names) // shards)
    weight_map, total = {}, 0
    for s in range(shards):
        fname = f"{basename}-{s + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s * per:(s + 1) * per]}
        _save_safetensors(part, folder / fname)
        weight_map.update({n: fname for n in part})
        total += sum(t.numel() * t.element_size() for t in part.values())
    index = folder / f"{basename}.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return index


def write_transformer(model: torch.nn.Module, root: str | os.PathLike, fmt: str) -> Path:
    """Write a tiny transformer in ``fmt`` (diffusers, original, original-sharded, comfy) under ``root``."""
    root = Path(root)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    if fmt == "diffusers":
        model.save_pretrained(root / "diffusers")
        return root / "diffusers"
    original = to_format(sd, "original")
    if fmt == "original":
        _save_safetensors(original, root / "wan_original.safetensors")
        return root / "wan_original.safetensors"
    if fmt == "original-sharded":
        return save_sharded(original, root / "sharded", "diffusion_pytorch_model")
    if fmt == "comfy":
        _save_safetensors({COMFY_PREFIX + k: v for k, v in original.items()}, root / "wan_comfy.safetensors")
        return root / "wan_comfy.safetensors"
    raise ValueError(f"unknown format {fmt!r}")


def write_vae(model: torch.nn.Module, root: str | os.PathLike, fmt: str) -> Path:
    """Write a tiny Wan VAE: ``diffusers`` folder, ``original`` (.pth, upstream names) or ``original-safetensors``."""
    root = Path(root)
    if fmt == "diffusers":
        model.save_pretrained(root / "vae_diffusers")
        return root / "vae_diffusers"
    original = to_format({k: v.detach() for k, v in model.state_dict().items()}, "original")
    if fmt == "original":
        torch.save(original, root / "Wan2.1_VAE.pth")
        return root / "Wan2.1_VAE.pth"
    if fmt == "original-safetensors":
        _save_safetensors(original, root / "Wan2.1_VAE.safetensors")
        return root / "Wan2.1_VAE.safetensors"
    raise ValueError(f"unknown format {fmt!r}")


def write_umt5(model: torch.nn.Module, root: str | os.PathLike, fmt: str) -> Path:
    """Write a tiny UMT5 encoder: ``diffusers`` (transformers save_pretrained) or ``original`` (.pth)."""
    root = Path(root)
    if fmt == "diffusers":
        model.save_pretrained(root / "umt5_hf")
        return root / "umt5_hf"
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    original = to_format(sd, "original")
    if fmt == "original":
        torch.save(original, root / "models_t5_umt5-xxl-enc-bf16.pth")
        return root / "models_t5_umt5-xxl-enc-bf16.pth"
    raise ValueError(f"unknown format {fmt!r}")


def wan_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """Upstream ``WanModel`` config.json for a Diffusers transformer config (wan/modules/model.py)."""
    kind = "vace" if "vace_layers" in config else ("i2v" if config.get("image_dim") else "t2v")
    out = {
        "_class_name": "VaceWanModel" if kind == "vace" else "WanModel", "model_type": kind,
        "patch_size": list(config["patch_size"]), "text_len": 512, "in_dim": config["in_channels"],
        "dim": config["num_attention_heads"] * config["attention_head_dim"], "ffn_dim": config["ffn_dim"],
        "freq_dim": config["freq_dim"], "text_dim": config["text_dim"], "out_dim": config["out_channels"],
        "num_heads": config["num_attention_heads"], "num_layers": config["num_layers"], "window_size": [-1, -1],
        "qk_norm": True, "cross_attn_norm": True, "eps": config["eps"],
    }
    if kind == "vace":
        out.update(vace_layers=list(config["vace_layers"]), vace_in_dim=config["vace_in_channels"])
    return out


def write_wan_folder(transformer: torch.nn.Module, vae: torch.nn.Module, umt5: torch.nn.Module,
                     root: str | os.PathLike) -> Path:
    """An original Wan folder: transformer safetensors + config.json, Wan2.1_VAE.pth, models_t5_*.pth."""
    folder = Path(root) / "Wan2.1-tiny"
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach() for k, v in transformer.state_dict().items()}
    _save_safetensors(to_format(sd, "original"), folder / "diffusion_pytorch_model.safetensors")
    (folder / "config.json").write_text(json.dumps(wan_model_config(dict(transformer.config)), indent=2))
    torch.save(to_format({k: v.detach() for k, v in vae.state_dict().items()}, "original"), folder / "Wan2.1_VAE.pth")
    torch.save(to_format({k: v.detach() for k, v in umt5.state_dict().items()}, "original"),
               folder / "models_t5_umt5-xxl-enc-bf16.pth")
    return folder
