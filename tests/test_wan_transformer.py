"""Wan2.1 transformer mappings: upstream <-> Diffusers for T2V, I2V, FLF2V and VACE.

Protects: bit-identical round trips (names, shapes, bytes), agreement with diffusers' own
converter (an oracle independent of our tables), strict loading with identical forward output,
and the unknown/missing-key errors.
"""

from __future__ import annotations

import pytest
import torch

from vqtool.errors import MappingError
from vqtool.mapping import identify, iter_converted, plan_conversion
from vqtool.testing import DictStore
from vqtool.testing.wan import COMFY_PREFIX, TRANSFORMER_VARIANTS, build_transformer, to_format

# The single-file converter in diffusers 0.42.1 does not rename FLF2V's emb_pos; the Wan script does.
_DIFFUSERS_SCRIPT_ONLY = {"img_emb.emb_pos": "condition_embedder.image_embedder.pos_embed"}


@pytest.fixture(scope="module", params=TRANSFORMER_VARIANTS)
def tiny(request):
    model = build_transformer(request.param, seed=1)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    return request.param, model, sd


def _convert(sd: dict, to: str, prefix: str = "") -> dict:
    store = DictStore(sd)
    plan = plan_conversion(store, to, prefix=prefix)
    return dict(iter_converted(store, plan))


def _identical(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].view(torch.uint8), b[k].view(torch.uint8)) if a[k].numel() else True, k


def test_upstream_names_match_diffusers_own_converter(tiny):
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    _, _, sd = tiny
    original = _convert(sd, "original")
    theirs = convert_wan_transformer_to_diffusers(dict(original))
    theirs = {_DIFFUSERS_SCRIPT_ONLY.get(k, k): v for k, v in theirs.items()}
    assert set(theirs) == set(sd)
    assert all(torch.equal(theirs[k], sd[k]) for k in sd)


@pytest.mark.parametrize("prefix", ["", COMFY_PREFIX])
def test_original_to_diffusers_to_original_is_bit_identical(tiny, prefix):
    _, _, sd = tiny
    original = {prefix + k: v.to(torch.bfloat16) for k, v in _convert(sd, "original").items()}
    diffusers = _convert(original, "diffusers")
    assert set(diffusers) == set(sd)
    _identical(_convert(diffusers, "original", prefix=prefix), original)


def test_converted_weights_load_strict_with_identical_output(tiny):
    variant, model, sd = tiny
    diffusers = _convert(_convert(sd, "original"), "diffusers")
    clone = type(model)(**model.config).eval()
    clone.load_state_dict(diffusers, strict=True)
    gen = torch.Generator().manual_seed(0)
    cfg = model.config
    kwargs = dict(
        hidden_states=torch.randn(1, cfg.in_channels, 2, 8, 8, generator=gen),
        timestep=torch.tensor([500]),
        encoder_hidden_states=torch.randn(1, 6, cfg.text_dim, generator=gen),
        return_dict=False,
    )
    if cfg.image_dim:
        # FLF2V: first and last frame, pos_embed_seq_len tokens in all (diffusers WanImageEmbedding)
        shape = (2, cfg.pos_embed_seq_len // 2, cfg.image_dim) if cfg.pos_embed_seq_len else (1, 4, cfg.image_dim)
        kwargs["encoder_hidden_states_image"] = torch.randn(*shape, generator=gen)
    if variant == "vace":
        kwargs["control_hidden_states"] = torch.randn(1, cfg.vace_in_channels, 2, 8, 8, generator=gen)
    with torch.no_grad():
        assert torch.equal(model(**kwargs)[0], clone(**kwargs)[0])


def test_stray_and_missing_keys_are_listed(tiny):
    _, _, sd = tiny
    original = _convert(sd, "original")
    broken = dict(original)
    broken["blocks.0.self_attn.q.lora_A"] = torch.zeros(1)
    del broken["blocks.1.ffn.2.bias"]
    with pytest.raises(MappingError) as err:
        plan_conversion(DictStore(broken), "diffusers")
    assert "blocks.0.self_attn.q.lora_A" in str(err.value) and "blocks.1.ffn.2.bias" in str(err.value)


def test_plan_reads_no_data_and_keeps_shapes(tiny):
    _, _, sd = tiny
    meta = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in _convert(sd, "original").items()}
    plan = plan_conversion(DictStore(meta), "diffusers")  # meta tensors cannot be read
    assert {t.name: t.shape for t in plan.tensors} == {k: tuple(v.shape) for k, v in sd.items()}
    assert plan.config_json["num_layers"] == tiny[1].config.num_layers


def test_diffusers_config_json_rebuilds_the_model(tiny):
    _, model, sd = tiny
    plan = plan_conversion(DictStore(_convert(sd, "original")), "diffusers")
    cfg = {k: v for k, v in plan.config_json.items() if not k.startswith("_")}
    clone = type(model)(**cfg)
    assert {k: tuple(v.shape) for k, v in clone.state_dict().items()} == {k: tuple(v.shape) for k, v in sd.items()}
    assert plan.config_json["_class_name"] == type(model).__name__


def test_roles_are_declared_for_every_tensor(tiny):
    variant, _, sd = tiny
    graph = identify(DictStore(_convert(sd, "original"))).graph
    assert len(graph) == len(sd)
    assert graph["blocks.0.self_attn.q.weight"].role == "attn.self.q"
    assert graph["blocks.1.cross_attn.o.weight"].role == "attn.cross.out"
    assert graph["head.modulation"].role == "head.modulation"
    assert graph["blocks.1.norm3.weight"].block == 1
    if variant in ("i2v", "flf2v"):
        assert graph["blocks.0.cross_attn.k_img.weight"].role == "attn.image.k"
    if variant == "vace":
        assert graph["vace_blocks.1.after_proj.weight"].role == "vace.proj"
        assert graph["vace_blocks.1.self_attn.q.weight"].block_kind == "vace"
        assert graph.blocks("vace") == [0, 1]
