"""Tiny, deterministic, offline pipelines for tests and ``vqtool demo``.

Each is a real diffusers pipeline folder (``save_pretrained``): the tiny seeded transformers of
:mod:`vqtool.testing` (width 256, so K-quants apply), a small VAE, a tiny text encoder and an
offline tokenizer. A 9-frame 32x32 Wan video takes about a second on a 2-core CPU.

Example::

    from reference_infer.tiny import save_pipeline
    save_pipeline("wan-t2v", "tiny-wan/")            # then: vqtool validate --reference tiny-wan/ ...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# A smaller Wan VAE than vqtool.testing's (one resblock, narrow): decoding dominates CPU time.
TINY_WAN_VAE: dict[str, Any] = dict(base_dim=16, z_dim=16, dim_mult=[1, 1, 2, 2], num_res_blocks=1, attn_scales=[],
                                    temperal_downsample=[False, True, True])
# Wan2.1's released scheduler settings (Wan-AI/Wan2.1-T2V-1.3B-Diffusers scheduler_config.json).
WAN_SCHEDULER: dict[str, Any] = dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                     num_train_timesteps=1000)
TINY_CLIP_VISION: dict[str, Any] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, image_size=32, patch_size=8, projection_dim=64)

PIPELINES = ("wan-t2v", "wan-i2v", "wan-vace", "cogvideox-2b", "cogvideox-5b", "cogvideox-5b-i2v",
             "cogvideox-1.5", "cogvideox-1.5-i2v")


def _wan_pipeline(kind: str, seed: int, transformer_dtype):
    from diffusers import (AutoencoderKLWan, UniPCMultistepScheduler, WanImageToVideoPipeline, WanPipeline,
                           WanVACEPipeline)

    from vqtool.testing import seeded_, wan
    from vqtool.testing.cogvideox import build_tokenizer

    transformer = wan.build_transformer(kind, seed)
    if transformer_dtype is not None:
        transformer = transformer.to(transformer_dtype)
    common = dict(tokenizer=build_tokenizer(), text_encoder=wan.build_umt5(seed + 2),
                  vae=seeded_(AutoencoderKLWan(**TINY_WAN_VAE).eval(), seed + 1),
                  scheduler=UniPCMultistepScheduler(**WAN_SCHEDULER), transformer=transformer)
    if kind == "t2v":
        return WanPipeline(**common)
    if kind == "vace":
        return WanVACEPipeline(**common)
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    encoder = seeded_(CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP_VISION)).eval(), seed + 3)
    size = TINY_CLIP_VISION["image_size"]
    processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return WanImageToVideoPipeline(image_encoder=encoder, image_processor=processor, **common)


def build_pipeline(name: str, seed: int = 0, transformer_dtype=None):
    """The tiny pipeline ``name`` (one of ``PIPELINES``), seeded; ``transformer_dtype`` e.g. torch.float16."""
    if name not in PIPELINES:
        raise ValueError(f"unknown tiny pipeline {name!r}; choose from {', '.join(PIPELINES)}")
    family, _, kind = name.partition("-")
    if family == "wan":
        return _wan_pipeline(kind, seed, transformer_dtype)
    from vqtool.testing import cogvideox

    pipe = cogvideox.build_pipeline(kind, seed)
    if transformer_dtype is not None:
        pipe.transformer.to(transformer_dtype)
    return pipe


def save_pipeline(name: str, folder: str | os.PathLike, seed: int = 0, transformer_dtype=None) -> Path:
    """``save_pretrained`` the tiny pipeline ``name`` into ``folder`` (safetensors) and return it."""
    folder = Path(folder)
    build_pipeline(name, seed, transformer_dtype).save_pretrained(folder, safe_serialization=True)
    return folder


def recipe_builder(name: str):
    """A ``vqtool.bundled`` build function for the tiny pipeline ``name``."""

    def build(folder: str) -> None:
        save_pipeline(name, folder)

    return build
