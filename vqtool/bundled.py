"""Tiny models that ship with vqtool as recipes (a config and a seed), built on first use.

``bundled:NAME`` works wherever a path is accepted. The model is built from the
real diffusers class with a fixed seed, written once into the cache folder
(``$VQTOOL_CACHE`` or ``~/.cache/vqtool``) atomically, and reused afterwards.
Building needs diffusers (``pip install 'vqtool[infer]'``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from vqtool.errors import InputError


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    build: Callable[[str], None]  # writes the model into an empty folder


def _tiny_wan_t2v(folder: str) -> None:
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(0)
    # Hidden size 256 and FFN 512 keep every K-quant block size (256) usable.
    model = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=4, attention_head_dim=64, in_channels=16, out_channels=16,
        text_dim=64, freq_dim=256, ffn_dim=512, num_layers=2, rope_max_seq_len=64,
    )
    model.save_pretrained(folder, safe_serialization=True)


RECIPES: dict[str, Recipe] = {}


def register(recipe: Recipe) -> None:
    if recipe.name in RECIPES:
        raise ValueError(f"bundled model {recipe.name!r} registered twice")
    RECIPES[recipe.name] = recipe


register(Recipe("tiny-wan2.1-t2v", "Wan2.1 T2V transformer, 2 blocks, dim 256 (Diffusers folder)", _tiny_wan_t2v))


def _tiny_pipeline(name: str) -> Callable[[str], None]:
    def build(folder: str) -> None:
        from reference_infer.tiny import save_pipeline  # the reference pipelines' tiny builders

        save_pipeline(name, folder)

    return build


# Whole tiny Diffusers pipelines (transformer, VAE, text encoder, tokenizer, scheduler) for validate and demo.
for _name, _pipe, _what in (
    ("tiny-wan2.1-t2v-pipeline", "wan-t2v", "Wan2.1 T2V"), ("tiny-wan2.1-i2v-pipeline", "wan-i2v", "Wan2.1 I2V"),
    ("tiny-wan2.1-vace-pipeline", "wan-vace", "Wan2.1 VACE"),
    ("tiny-cogvideox-2b-pipeline", "cogvideox-2b", "CogVideoX-2B T2V"),
    ("tiny-cogvideox-5b-i2v-pipeline", "cogvideox-5b-i2v", "CogVideoX-5B I2V"),
):
    register(Recipe(_name, f"{_what} pipeline, tiny and seeded (Diffusers pipeline folder)", _tiny_pipeline(_pipe)))


def cache_dir() -> str:
    return os.environ.get("VQTOOL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "vqtool")


def materialize(name: str) -> str:
    """Path of bundled model ``name``, building it on first use."""
    from vqtool import __version__

    if name not in RECIPES:
        raise InputError(f"no bundled model '{name}' (available: {', '.join(sorted(RECIPES))})", path=f"bundled:{name}")
    target = os.path.join(cache_dir(), "bundled", f"{name}-{__version__}")
    if os.path.isfile(os.path.join(target, ".complete")):
        return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=os.path.dirname(target))
    try:
        RECIPES[name].build(tmp)
        with open(os.path.join(tmp, ".complete"), "w") as f:
            json.dump({"recipe": name, "vqtool": __version__}, f)
        if os.path.isdir(target):
            shutil.rmtree(target)
        os.replace(tmp, target)
    except ImportError as exc:
        raise InputError(
            f"building this bundled model needs {exc.name or 'diffusers'}: pip install 'vqtool[infer]'",
            path=f"bundled:{name}",
        ) from None
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return target
