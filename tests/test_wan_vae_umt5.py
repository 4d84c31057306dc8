"""Wan VAE (upstream <-> AutoencoderKLWan) and UMT5 (Wan .pth <-> UMT5EncoderModel) mappings,
plus converting a whole original Wan folder.

Oracles: diffusers' own convert_wan_vae_to_diffusers, and the UMT5 key table of the reference
document written out below (both independent of our tables).
"""

from __future__ import annotations

import pytest
import torch

from vqtool.errors import MappingError
from vqtool.mapping import iter_converted, plan_conversion
from vqtool.testing import DictStore
from vqtool.testing.wan import build_transformer, build_umt5, build_vae, to_format, write_wan_folder


def _convert(sd: dict, to: str) -> dict:
    store = DictStore(sd)
    return dict(iter_converted(store, plan_conversion(store, to)))


def _identical(a: dict, b: dict) -> None:
    assert list(a) == list(b)
    assert all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def vae():
    model = build_vae(seed=2)
    return model, {k: v.detach() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def umt5():
    model = build_umt5(seed=2)
    return model, {k: v.detach() for k, v in model.state_dict().items()}


def test_vae_upstream_names_match_diffusers_own_converter(vae):
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    _, sd = vae
    theirs = convert_wan_vae_to_diffusers(_convert(sd, "original"))
    assert set(theirs) == set(sd) and all(torch.equal(theirs[k], sd[k]) for k in sd)


def test_vae_round_trip_is_bit_identical(vae):
    _, sd = vae
    original = {k: v.to(torch.bfloat16) for k, v in _convert(sd, "original").items()}
    assert len(original) == 194
    _identical(_convert(_convert(original, "diffusers"), "original"), original)


def test_vae_loads_strict_and_decodes_identically(vae):
    from diffusers import AutoencoderKLWan

    model, sd = vae
    plan = plan_conversion(DictStore(_convert(sd, "original")), "diffusers")
    cfg = {k: v for k, v in plan.config_json.items() if not k.startswith("_")}
    clone = AutoencoderKLWan(**cfg).eval()
    clone.load_state_dict(_convert(_convert(sd, "original"), "diffusers"), strict=True)
    x = torch.randn(1, 3, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x).sample, clone(x).sample)


def test_vae_stray_and_missing_keys_are_listed(vae):
    _, sd = vae
    broken = _convert(sd, "original")
    broken["decoder.upsamples.3.residual.0.gamma"] = torch.zeros(1)  # an upsampler has no residual
    del broken["encoder.downsamples.5.time_conv.bias"]
    with pytest.raises(MappingError) as err:
        plan_conversion(DictStore(broken), "diffusers")
    assert "decoder.upsamples.3.residual.0.gamma" in str(err.value)
    assert "encoder.downsamples.5.time_conv.bias" in str(err.value)


# Reference §4.4: upstream -> UMT5EncoderModel, per block N, plus the two top-level tensors.
UMT5_TABLE = {
    "blocks.{N}.norm1.weight": "encoder.block.{N}.layer.0.layer_norm.weight",
    "blocks.{N}.attn.q.weight": "encoder.block.{N}.layer.0.SelfAttention.q.weight",
    "blocks.{N}.attn.k.weight": "encoder.block.{N}.layer.0.SelfAttention.k.weight",
    "blocks.{N}.attn.v.weight": "encoder.block.{N}.layer.0.SelfAttention.v.weight",
    "blocks.{N}.attn.o.weight": "encoder.block.{N}.layer.0.SelfAttention.o.weight",
    "blocks.{N}.pos_embedding.embedding.weight": "encoder.block.{N}.layer.0.SelfAttention.relative_attention_bias.weight",
    "blocks.{N}.norm2.weight": "encoder.block.{N}.layer.1.layer_norm.weight",
    "blocks.{N}.ffn.gate.0.weight": "encoder.block.{N}.layer.1.DenseReluDense.wi_0.weight",
    "blocks.{N}.ffn.fc1.weight": "encoder.block.{N}.layer.1.DenseReluDense.wi_1.weight",
    "blocks.{N}.ffn.fc2.weight": "encoder.block.{N}.layer.1.DenseReluDense.wo.weight",
}


def test_umt5_upstream_names_follow_the_reference_table(umt5):
    model, sd = umt5
    original = _convert(sd, "original")
    expected = {"token_embedding.weight": "shared.weight", "norm.weight": "encoder.final_layer_norm.weight"}
    for n in range(model.config.num_layers):
        expected.update({o.format(N=n): h.format(N=n) for o, h in UMT5_TABLE.items()})
    assert set(original) == set(expected)
    assert all(torch.equal(original[o], sd[h]) for o, h in expected.items())


def test_umt5_round_trip_and_strict_load(umt5):
    from transformers import UMT5EncoderModel

    model, sd = umt5
    original = {k: v.to(torch.bfloat16) for k, v in _convert(sd, "original").items()}
    hf = _convert(original, "transformers")
    _identical(_convert(hf, "original"), original)
    clone = UMT5EncoderModel(model.config).eval()
    hf32 = _convert(_convert(sd, "original"), "transformers")
    # the tied embed_tokens is written once, as shared.weight (like save_pretrained)
    hf32["encoder.embed_tokens.weight"] = hf32["shared.weight"]
    clone.load_state_dict(hf32, strict=True)
    ids = torch.randint(0, model.config.vocab_size, (1, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).last_hidden_state, clone(input_ids=ids).last_hidden_state)


def test_wan_folder_converts_every_component_and_back(tmp_path):
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from safetensors.torch import load_file
    from transformers import UMT5EncoderModel

    from vqtool.io import open_checkpoint
    from vqtool.mapping.convert import convert

    tr, va, t5 = build_transformer("t2v", seed=6), build_vae(seed=6), build_umt5(seed=6)
    folder = write_wan_folder(tr, va, t5, tmp_path)
    result = convert(folder, tmp_path / "hf", to="diffusers", progress=False)
    assert sorted(c["component"] for c in result["components"]) == ["text_encoder", "transformer", "vae"]
    for cls, sub, model in ((WanTransformer3DModel, "transformer", tr), (AutoencoderKLWan, "vae", va),
                            (UMT5EncoderModel, "text_encoder", t5)):
        loaded = cls.from_pretrained(tmp_path / "hf" / sub)
        want = {k: v for k, v in model.state_dict().items()}
        got = loaded.state_dict()
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want), sub
    back = convert(tmp_path / "hf" / "vae", tmp_path / "vae_back.safetensors", to="original", progress=False)
    assert back["components"][0]["family"] == "wan"
    with open_checkpoint(folder) as ckpt:
        src = ckpt.components["vae"]
        mine = load_file(tmp_path / "vae_back.safetensors")
        assert set(mine) == set(src.keys()) and all(torch.equal(mine[k], src.read(k)) for k in mine)
