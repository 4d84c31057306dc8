"""Independent expectations for CogVideoX SAT transformer checkpoints.

Written out by hand from the reference document (checkpoint-formats.md §1.2: key
table, shapes, per-variant presence, tensor counts), NOT from vqtool's tables, so
that the SAT files vqtool writes (and the SAT fixtures, which are produced through
vqtool's own mapping) are checked against something that does not share their bugs.
Counts are checked on full-shape models built on the meta device (no memory).
"""

from __future__ import annotations

import pytest

from vqtool.testing import cogvideox as tc
from vqtool.testing.cogvideox import MetaStore

PREFIX = "model.diffusion_model."

# variant -> (hidden, layers, in_channels, 1.5?, rotary?, learned pos?, ofs?)
FULL = {
    "2b": (1920, 30, 16, False, False, False, False),
    "5b": (3072, 42, 16, False, True, False, False),
    "5b-i2v": (3072, 42, 32, False, True, True, False),
    "1.5": (3072, 42, 16, True, True, False, False),
    "1.5-i2v": (3072, 42, 32, True, True, False, True),
}
# Reference doc §1.2 "Derived tensor counts".
COUNTS = {"2b": (556, 736), "5b": (775, 1024), "5b-i2v": (776, 1025), "1.5": (773, 1024), "1.5-i2v": (777, 1028)}


def expected_sat(variant: str) -> dict[str, tuple[int, ...]]:
    """Every key (prefixed) and shape of a released SAT transformer file, per the reference table."""
    h, layers, c, v15, rotary, learned, ofs = FULL[variant]
    keys: dict[str, tuple[int, ...]] = {}

    def wb(name, wshape, bshape):
        keys[f"{name}.weight"] = wshape
        keys[f"{name}.bias"] = bshape

    wb("time_embed.0", (512, h), (512,))
    wb("time_embed.2", (512, 512), (512,))
    if ofs:
        wb("ofs_embed.0", (512, 512), (512,))
        wb("ofs_embed.2", (512, 512), (512,))
    for n in range(layers):
        t = f"transformer.layers.{n}"
        wb(f"{t}.input_layernorm", (h,), (h,))
        wb(f"{t}.attention.query_key_value", (3 * h, h), (3 * h,))
        wb(f"{t}.attention.dense", (h, h), (h,))
        wb(f"{t}.post_attention_layernorm", (h,), (h,))
        wb(f"{t}.mlp.dense_h_to_4h", (4 * h, h), (4 * h,))
        wb(f"{t}.mlp.dense_4h_to_h", (h, 4 * h), (h,))
        wb(f"mixins.adaln_layer.adaLN_modulations.{n}.1", (12 * h, 512), (12 * h,))
        wb(f"mixins.adaln_layer.query_layernorm_list.{n}", (64,), (64,))
        wb(f"mixins.adaln_layer.key_layernorm_list.{n}", (64,), (64,))
    wb("transformer.final_layernorm", (h,), (h,))
    if rotary:  # leftover of SAT's base model in RoPE variants
        keys["transformer.position_embeddings.weight"] = (64, h)
    wb("mixins.patch_embed.proj", (h, c * 8) if v15 else (h, c, 2, 2), (h,))
    wb("mixins.patch_embed.text_proj", (h, 4096), (h,))
    if rotary and not v15:  # v1.0 Rotary mixin registers them as buffers
        keys["mixins.pos_embed.freqs_sin"] = (13 * 30 * 45, 64)
        keys["mixins.pos_embed.freqs_cos"] = (13 * 30 * 45, 64)
    if learned:
        keys["mixins.pos_embed.pos_embedding"] = (1, 226 + 17550, h)
    wb("mixins.final_layer.norm_final", (h,), (h,))
    wb("mixins.final_layer.linear", (128 if v15 else 64, h), (128 if v15 else 64,))
    wb("mixins.final_layer.adaLN_modulation.1", (2 * h, 512), (2 * h,))
    return {PREFIX + k: v for k, v in keys.items()}


# Keys a SAT -> Diffusers conversion drops (reference §1.3 "Dropped keys"): regenerated or unused.
DROPPED_SUFFIXES = ("mixins.pos_embed.freqs_sin", "mixins.pos_embed.freqs_cos", "transformer.position_embeddings.weight")


def is_dropped(key: str) -> bool:
    return key.removeprefix(PREFIX) in DROPPED_SUFFIXES


@pytest.mark.parametrize("variant", tc.VARIANTS)
def test_reference_sat_key_table_gives_the_documented_counts(variant):
    assert len(expected_sat(variant)) == COUNTS[variant][0]


@pytest.mark.parametrize("variant", tc.VARIANTS)
def test_full_shape_diffusers_model_has_the_documented_tensor_count(variant):
    model = tc.build_transformer(variant, full=True, device="meta")
    assert len(model.state_dict()) == COUNTS[variant][1]


def _diffusers_shapes(variant: str) -> dict[str, tuple[int, ...]]:
    model = tc.build_transformer(variant, full=True, device="meta")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("variant", tc.VARIANTS)
def test_full_shape_diffusers_to_sat_plan_matches_the_reference_key_table(variant):
    from vqtool.mapping import identify, plan_conversion
    from vqtool.sat_convert import _regenerated

    store = MetaStore(_diffusers_shapes(variant))
    ident = identify(store, family="cogvideox", component="transformer", fmt="diffusers")
    assert ident.graph.variant == variant
    plan = plan_conversion(store, "sat", ident=ident, prefix=PREFIX)
    written = {t.name: t.shape for t in plan.tensors}
    written.update({PREFIX + n: tuple(t.shape) for n, t, _ in _regenerated(ident)})
    expected = {k: v for k, v in expected_sat(variant).items() if "freqs_" not in k}  # omitted: SAT recomputes them
    assert written == expected


@pytest.mark.parametrize("variant", tc.VARIANTS)
def test_full_shape_reference_sat_keys_map_to_the_diffusers_model(variant):
    from vqtool.mapping import identify, plan_conversion

    store = MetaStore(expected_sat(variant))
    ident = identify(store)
    assert (ident.graph.family, ident.graph.component, ident.table.format) == ("cogvideox", "transformer", "sat")
    assert ident.graph.variant == variant
    assert ident.problems() == []
    plan = plan_conversion(store, "diffusers", ident=ident)
    assert {t.name: t.shape for t in plan.tensors} == _diffusers_shapes(variant)
    assert sorted(n for n, _ in plan.ignored) == sorted(k for k in expected_sat(variant) if is_dropped(k))
    cfg = FULL[variant]
    assert plan.config["num_layers"] == cfg[1] and plan.config["num_attention_heads"] == cfg[0] // 64
    assert plan.config["in_channels"] == cfg[2]
    assert plan.config["use_rotary_positional_embeddings"] == cfg[4]


@pytest.mark.parametrize("variant", tc.VARIANTS)
def test_fullshape_sat_key_list_for_benchmarks_equals_the_reference_table(variant):
    spec = tc.fullshape_sat_tensors(variant)
    assert len(spec) == len(dict(spec)) == COUNTS[variant][0]
    assert dict(spec) == expected_sat(variant)


def test_fullshape_sat_vae_has_the_documented_436_tensors_and_215_58m_parameters():
    import math

    spec = tc.fullshape_vae_sat_tensors()
    assert len(spec) == 436
    assert round(sum(math.prod(s) for _, s in spec) / 1e6, 2) == 215.58
    names = dict(spec)
    # SAT keeps the decoder up-blocks in reverse: up.3 is the first applied (512 channels, no upsample of up.0).
    assert "decoder.up.0.block.0.conv1.conv.weight" in names and "decoder.up.0.upsample.conv.weight" not in names
    assert names["decoder.up.3.block.0.conv1.conv.weight"][0] == 512
    assert "encoder.mid.block_2.conv2.conv.weight" in names and "encoder.down.1.block.0.nin_shortcut.weight" in names
