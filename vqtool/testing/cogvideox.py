"""Deterministic tiny random CogVideoX models (transformer, VAE, T5) for tests.

Every builder makes a real diffusers / transformers module, seeded, on CPU in
float32, with every parameter (and the persistent learned position table)
re-drawn from a seeded generator so that no tensor is a constant from its
initializer (a zero-initialised ``proj_out`` would hide mapping mistakes).

Variants (``TINY_TRANSFORMER`` keys) mirror the released checkpoints:

- ``2b``: 3D sincos positions, Conv2d patch embedding; width 320 (like the real
  2B's 1920, *not* a multiple of 256).
- ``5b``: rotary positions; width 256.
- ``5b-i2v``: rotary plus a learned (persistent) position table, 32 input channels.
- ``1.5``: ``patch_size_t=2``, Linear patch embedding, rotary.
- ``1.5-i2v``: like ``1.5`` plus ``ofs_embed`` and 32 input channels.

``FULL_TRANSFORMER`` holds the released configs (for meta-device key-set checks).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

VARIANTS = ("2b", "5b", "5b-i2v", "1.5", "1.5-i2v")

_TINY_COMMON: dict[str, Any] = dict(
    attention_head_dim=64,  # 64 in every released variant (SAT's QK-LayerNorm is [64])
    time_embed_dim=512,
    text_embed_dim=32,  # the tiny T5's d_model
    num_layers=2,
    sample_height=8,
    sample_width=8,
    sample_frames=5,  # two latent frames
    max_text_seq_length=8,
)

TINY_TRANSFORMER: dict[str, dict[str, Any]] = {
    "2b": dict(_TINY_COMMON, num_attention_heads=5, in_channels=16, out_channels=16),
    "5b": dict(_TINY_COMMON, num_attention_heads=4, in_channels=16, out_channels=16,
               use_rotary_positional_embeddings=True),
    "5b-i2v": dict(_TINY_COMMON, num_attention_heads=4, in_channels=32, out_channels=16,
                   use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True),
    "1.5": dict(_TINY_COMMON, num_attention_heads=4, in_channels=16, out_channels=16,
                use_rotary_positional_embeddings=True, patch_size_t=2, patch_bias=False),
    "1.5-i2v": dict(_TINY_COMMON, num_attention_heads=4, in_channels=32, out_channels=16,
                    use_rotary_positional_embeddings=True, patch_size_t=2, patch_bias=False, ofs_embed_dim=512),
}

# Released configs (diffusers' THUDM/CogVideoX-* transformer/config.json; reference doc §1.2-1.3).
_FULL_10 = dict(attention_head_dim=64, time_embed_dim=512, text_embed_dim=4096, sample_height=60, sample_width=90,
                sample_frames=49, max_text_seq_length=226, patch_size=2)
_FULL_15 = dict(attention_head_dim=64, time_embed_dim=512, text_embed_dim=4096, sample_height=300, sample_width=300,
                sample_frames=81, max_text_seq_length=226, patch_size=2, patch_size_t=2, patch_bias=False,
                use_rotary_positional_embeddings=True, num_attention_heads=48, num_layers=42)
FULL_TRANSFORMER: dict[str, dict[str, Any]] = {
    "2b": dict(_FULL_10, num_attention_heads=30, num_layers=30, in_channels=16, out_channels=16),
    "5b": dict(_FULL_10, num_attention_heads=48, num_layers=42, in_channels=16, out_channels=16,
               use_rotary_positional_embeddings=True),
    "5b-i2v": dict(_FULL_10, num_attention_heads=48, num_layers=42, in_channels=32, out_channels=16,
                   use_rotary_positional_embeddings=True, use_learned_positional_embeddings=True),
    "1.5": dict(_FULL_15, in_channels=16, out_channels=16),
    "1.5-i2v": dict(_FULL_15, in_channels=32, out_channels=16, ofs_embed_dim=512),
}

TINY_VAE: dict[str, Any] = dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1, latent_channels=16,
                                norm_num_groups=32, sample_height=32, sample_width=32)

TINY_T5: dict[str, Any] = dict(vocab_size=64, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                               relative_attention_num_buckets=8, relative_attention_max_distance=128,
                               feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False,
                               tie_word_embeddings=False)

_TOKENIZER_PIECES = list("abcdefghijklmnopqrstuvwxyz") + ["▁a", "▁the", "▁cat", "▁dog", "▁video", "▁of", "▁runs"]


class MetaStore:
    """A tensor store of names and shapes only (no data): enough for detection and planning."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], dtype: str = "BF16", config: dict | None = None):
        from vqtool.io.base import DTYPE_SIZES, TensorInfo

        self.path, self.format, self.config, self.files, self.metadata = "<meta>", "meta", config, ["<meta>"], {}
        self._infos = {n: TensorInfo(n, tuple(s), dtype, "<meta>", DTYPE_SIZES[dtype] * math.prod(s))
                       for n, s in shapes.items()}

    def infos(self):
        return self._infos

    def keys(self):
        return list(self._infos)

    def read(self, name):
        raise NotImplementedError(f"MetaStore holds no data ({name})")


def randomize_(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Re-draw every parameter and persistent buffer of ``module`` from a seeded generator (in place).

    Weights get N(0, 1/fan_in); 1-D ``weight`` tensors (norm scales) 1 + N(0, 0.1); biases and other
    tensors N(0, 0.1). Deterministic for a given seed and module structure.
    """
    gen = torch.Generator().manual_seed(seed)
    persistent = dict(module.state_dict(keep_vars=True))
    with torch.no_grad():
        for name, tensor in persistent.items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=gen, dtype=torch.float32)
            if tensor.ndim >= 2:
                fan_in = math.prod(tensor.shape[1:])
                value = noise / math.sqrt(fan_in)
            elif name.endswith("weight"):
                value = 1.0 + 0.1 * noise
            else:
                value = 0.1 * noise
            tensor.copy_(value.to(tensor.dtype))
    return module


def build_transformer(variant: str, seed: int = 0, full: bool = False, device: str = "cpu"):
    """A ``CogVideoXTransformer3DModel`` of ``variant``: tiny and random (default), or full-shape.

    ``full=True`` uses the released config; pass ``device="meta"`` for a key/shape-only model.
    """
    from diffusers import CogVideoXTransformer3DModel

    config = (FULL_TRANSFORMER if full else TINY_TRANSFORMER)[variant]
    with torch.device(device):
        model = CogVideoXTransformer3DModel(**config)
    if device != "meta":
        randomize_(model, seed)
    return model.eval()


def build_vae(seed: int = 0, scaling_factor: float = 1.15258426, invert_scale_latents: bool = False):
    """A tiny random ``AutoencoderKLCogVideoX``: 4 blocks like the real one (so ``up.I -> up_blocks.3-I`` holds),
    with a channel change so that resnets carry ``conv_shortcut`` (SAT ``nin_shortcut``)."""
    from diffusers import AutoencoderKLCogVideoX

    model = AutoencoderKLCogVideoX(**TINY_VAE, scaling_factor=scaling_factor, invert_scale_latents=invert_scale_latents)
    return randomize_(model, seed).eval()


def build_t5(seed: int = 0):
    """A tiny random transformers ``T5EncoderModel`` (T5 v1.1 style: gated GELU, untied head)."""
    from transformers import T5Config, T5EncoderModel

    model = T5EncoderModel(T5Config(**TINY_T5))
    return randomize_(model, seed).eval()


def build_tokenizer():
    """A tiny offline ``T5Tokenizer`` (Unigram over letters and a few words; ids fit ``TINY_T5``'s vocab)."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    vocab += [(piece, -1.0 - 0.01 * i) for i, piece in enumerate(_TOKENIZER_PIECES)]
    assert len(vocab) <= TINY_T5["vocab_size"]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=TINY_TRANSFORMER["2b"]["max_text_seq_length"])


def transformer_inputs(model, seed: int = 0, batch: int = 1) -> dict[str, Any]:
    """Seeded forward kwargs that fit ``model``'s config (sample size, channels, rotary, ofs)."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    frames = (cfg.sample_frames - 1) // cfg.temporal_compression_ratio + 1
    height, width = cfg.sample_height, cfg.sample_width
    inputs: dict[str, Any] = {
        "hidden_states": torch.randn(batch, frames, cfg.in_channels, height, width, generator=gen),
        "encoder_hidden_states": torch.randn(batch, cfg.max_text_seq_length, cfg.text_embed_dim, generator=gen),
        "timestep": torch.tensor([417] * batch),
        "return_dict": False,
    }
    if cfg.ofs_embed_dim:
        inputs["ofs"] = torch.tensor([2.0] * batch)
    if cfg.use_rotary_positional_embeddings:
        p, pt = cfg.patch_size, cfg.patch_size_t
        grid_t = frames if pt is None else frames // pt
        cos, sin = get_3d_rotary_pos_embed(
            embed_dim=cfg.attention_head_dim, crops_coords=((0, 0), (height // p, width // p)),
            grid_size=(height // p, width // p), temporal_size=grid_t, device="cpu")
        inputs["image_rotary_emb"] = (cos, sin)
    return inputs


def vae_input(seed: int = 0) -> torch.Tensor:
    """A seeded video batch [1, 3, 5, 32, 32] for the tiny VAE (5 frames -> 2 latent frames)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, 5, TINY_VAE["sample_height"], TINY_VAE["sample_width"], generator=gen) * 2 - 1


def save_diffusers(model, folder: str | Path) -> Path:
    """``save_pretrained`` into ``folder`` (safetensors, one shard) and return the folder."""
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


# --- whole folders: Diffusers pipelines and SAT folders (SAT produced through vqtool's own mapping) ---

TINY_SAMPLE_CONFIG = {k: _TINY_COMMON[k] for k in ("sample_height", "sample_width", "sample_frames", "max_text_seq_length")}


def build_pipeline(variant: str, seed: int = 0):
    """A tiny CogVideoX pipeline object (T2V or I2V class by variant) with seeded components."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXImageToVideoPipeline, CogVideoXPipeline

    from vqtool.sat_convert import I2V_VARIANTS, SCHEDULER_CONFIG, VAE_CONFIG

    scheduler = CogVideoXDDIMScheduler.from_config(
        {k: v for k, v in SCHEDULER_CONFIG.items() if not k.startswith("_")}, snr_shift_scale=3.0 if variant == "2b" else 1.0)
    cls = CogVideoXImageToVideoPipeline if variant in I2V_VARIANTS else CogVideoXPipeline
    return cls(tokenizer=build_tokenizer(), text_encoder=build_t5(seed + 2), vae=build_vae(seed + 1, **VAE_CONFIG[variant]),
               transformer=build_transformer(variant, seed), scheduler=scheduler)


def save_pipeline(variant: str, folder: str | Path, seed: int = 0) -> Path:
    """``save_pretrained`` a tiny pipeline of ``variant`` into ``folder``."""
    folder = Path(folder)
    build_pipeline(variant, seed).save_pretrained(folder, safe_serialization=True)
    return folder


def _released_like(sat_dir: Path, variant: str, seed: int) -> None:
    """Add what released SAT files carry but Diffusers does not: v1.0 rotary freqs buffers, VAE loss keys."""
    from vqtool.sat import COMPONENT_PREFIXES, TRANSFORMER_FILE

    gen = torch.Generator().manual_seed(seed + 7)
    path = sat_dir / "transformer" / "1" / TRANSFORMER_FILE
    state = torch.load(path, map_location="cpu", weights_only=True)
    sd = state["module"]
    prefix = COMPONENT_PREFIXES["transformer"]
    if variant in ("5b", "5b-i2v"):
        for name in ("freqs_sin", "freqs_cos"):
            sd[f"{prefix}mixins.pos_embed.{name}"] = torch.randn(40, 64, generator=gen)
    if f"{prefix}transformer.position_embeddings.weight" in sd:
        sd[f"{prefix}transformer.position_embeddings.weight"].normal_(generator=gen)
    torch.save(state, path)
    vae_path = sat_dir / "vae" / "3d-vae.pt"
    if vae_path.exists():
        vae = torch.load(vae_path, map_location="cpu", weights_only=True)
        vae["state_dict"]["loss.discriminator.main.0.weight"] = torch.randn(8, 3, 4, 4, generator=gen)
        vae["state_dict"]["loss.perceptual_loss.scaling_layer.shift"] = torch.randn(1, 3, 1, 1, generator=gen)
        torch.save(vae, vae_path)


def save_sat(variant: str, folder: str | Path, seed: int = 0, *, released_like: bool = True,
             full_finetune: bool = False, pipeline_dir: str | Path | None = None) -> Path:
    """A tiny SAT folder of ``variant``, produced from the tiny pipeline by ``vqtool hf2sat``'s library.

    ``released_like`` adds the keys real SAT files carry and conversions drop (freqs buffers,
    a random leftover ``position_embeddings``, VAE ``loss.*``). ``full_finetune`` puts the T5 and
    the VAE into the transformer file under ``conditioner.embedders.0.transformer.`` and
    ``first_stage_model.`` (and removes ``vae/`` and ``t5-v1_1-xxl/``), like a full fine-tune checkpoint.
    ``pipeline_dir``: an existing :func:`save_pipeline` folder of the same variant and seed to convert.
    """
    import shutil
    import tempfile

    from vqtool.sat import COMPONENT_PREFIXES, TRANSFORMER_FILE
    from vqtool.sat_convert import diffusers_to_sat

    folder = Path(folder)
    if pipeline_dir is not None:
        diffusers_to_sat(pipeline_dir, folder, progress=False)
    else:
        with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
            diffusers_to_sat(save_pipeline(variant, Path(tmp) / "pipe", seed), folder, progress=False)
    if released_like:
        _released_like(folder, variant, seed)
    if full_finetune:
        path = folder / "transformer" / "1" / TRANSFORMER_FILE
        state = torch.load(path, map_location="cpu", weights_only=True)
        vae = torch.load(folder / "vae" / "3d-vae.pt", map_location="cpu", weights_only=True)["state_dict"]
        state["module"].update({COMPONENT_PREFIXES["vae"] + k: v for k, v in vae.items()})
        t5 = build_t5(seed + 2).state_dict()  # torch state_dict: lists the tied encoder.embed_tokens too
        state["module"].update({COMPONENT_PREFIXES["text_encoder"] + k: v for k, v in t5.items()})
        torch.save(state, path)
        shutil.rmtree(folder / "vae")
        shutil.rmtree(folder / "t5-v1_1-xxl")
    return folder


# --- full-shape key lists (no data) for scripts/make_fullshape_checkpoint.py ---

def fullshape_sat_tensors(variant: str) -> list[tuple[str, tuple[int, ...]]]:
    """``[(name, shape)]`` of a released-like SAT transformer file of ``variant``, in vqtool's write order.

    Planned by vqtool's own tables from the full-shape meta model, plus what released files carry
    beyond Diffusers: the unused rotary ``transformer.position_embeddings`` and, in v1.0 rotary
    models, the ``freqs_sin/cos`` buffers ([13*30*45, 64]).
    """
    from vqtool.mapping import identify, plan_conversion
    from vqtool.sat import COMPONENT_PREFIXES
    from vqtool.sat_convert import _regenerated

    prefix = COMPONENT_PREFIXES["transformer"]
    model = build_transformer(variant, full=True, device="meta")
    store = MetaStore({k: tuple(v.shape) for k, v in model.state_dict().items()}, config=dict(model.config))
    ident = identify(store, family="cogvideox", component="transformer", fmt="diffusers")
    plan = plan_conversion(store, "sat", ident=ident, prefix=prefix)
    out = [(t.name, tuple(t.shape)) for t in plan.tensors]
    out += [(prefix + name, tuple(t.shape)) for name, t, _ in _regenerated(ident)]
    if variant in ("5b", "5b-i2v"):
        out += [(f"{prefix}mixins.pos_embed.{n}", (13 * 30 * 45, 64)) for n in ("freqs_sin", "freqs_cos")]
    return out


def fullshape_vae_sat_tensors() -> list[tuple[str, tuple[int, ...]]]:
    """``[(name, shape)]`` of the released SAT VAE (``vae/3d-vae.pt`` state dict; 436 tensors)."""
    from diffusers import AutoencoderKLCogVideoX

    from vqtool.mapping import plan_conversion

    with torch.device("meta"):
        model = AutoencoderKLCogVideoX()
    store = MetaStore({k: tuple(v.shape) for k, v in model.state_dict().items()})
    return [(t.name, tuple(t.shape)) for t in plan_conversion(store, "sat").tensors]
