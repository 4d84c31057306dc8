"""SAT semantics oracle: SAT-named weights, run the way SAT runs them, equal the Diffusers model.

Round trips cannot catch a consistent mistake (e.g. the adaLN chunks permuted wrongly both ways).
Here a transformer block and the final layer are computed from the *SAT* tensors that vqtool
writes, following SAT's own forward (CogVideo ``sat/dit_video_concat.py``: ``AdaLNMixin.layer_forward``
with chunks shift/scale/gate msa, mlp, then text msa, text mlp; fused ``[q; k; v]``; QK-LayerNorm per
head; ``FinalLayerMixin``: ``shift, scale = chunk(2)``), written here independently of the mapping
tables, and compared with the Diffusers modules holding the original weights. Block LayerNorms use
the Diffusers eps (SAT's 1e-6 vs 1e-5 is a documented caveat, not a mapping matter).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqtool.sat import COMPONENT_PREFIXES, TRANSFORMER_FILE
from vqtool.sat_convert import diffusers_to_sat
from vqtool.testing import cogvideox as tc

PREFIX = COMPONENT_PREFIXES["transformer"]


@pytest.fixture(scope="module", params=["2b", "1.5-i2v"])
def sat_and_model(request, tmp_path_factory):
    variant = request.param
    model = tc.build_transformer(variant, seed=11)
    folder = tmp_path_factory.mktemp(f"sem-{variant}")
    tc.save_diffusers(model, folder / "hf")
    diffusers_to_sat(folder / "hf", folder / "sat", progress=False)
    sd = torch.load(folder / "sat" / "transformer" / "1" / TRANSFORMER_FILE, weights_only=True)["module"]
    return {k.removeprefix(PREFIX): v for k, v in sd.items()}, model


def _linear(sd, name, x):
    return F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])


def _layer_norm(sd, name, x, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps)


def _modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def sat_block(sd, i, text, img, emb, heads, eps):
    """One SAT transformer layer with the AdaLN mixin (no rotary: image_rotary_emb=None on the Diffusers side)."""
    layer, n_text = f"transformer.layers.{i}", text.shape[1]
    chunks = _linear(sd, f"mixins.adaln_layer.adaLN_modulations.{i}.1", F.silu(emb)).chunk(12, dim=1)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = chunks[:6]
    t_shift_msa, t_scale_msa, t_gate_msa, t_shift_mlp, t_scale_mlp, t_gate_mlp = chunks[6:]

    def attention(x):
        b, n, h = x.shape
        q, k, v = _linear(sd, f"{layer}.attention.query_key_value", x).split(h, dim=-1)
        q, k, v = (t.view(b, n, heads, h // heads).transpose(1, 2) for t in (q, k, v))
        q = _layer_norm(sd, f"mixins.adaln_layer.query_layernorm_list.{i}", q, 1e-6)
        k = _layer_norm(sd, f"mixins.adaln_layer.key_layernorm_list.{i}", k, 1e-6)
        out = torch.softmax(q @ k.transpose(-1, -2) / (h // heads) ** 0.5, dim=-1) @ v
        return _linear(sd, f"{layer}.attention.dense", out.transpose(1, 2).reshape(b, n, h))

    x_img = _modulate(_layer_norm(sd, f"{layer}.input_layernorm", img, eps), shift_msa, scale_msa)
    x_txt = _modulate(_layer_norm(sd, f"{layer}.input_layernorm", text, eps), t_shift_msa, t_scale_msa)
    out = attention(torch.cat([x_txt, x_img], dim=1))
    img = img + gate_msa.unsqueeze(1) * out[:, n_text:]
    text = text + t_gate_msa.unsqueeze(1) * out[:, :n_text]
    x_img = _modulate(_layer_norm(sd, f"{layer}.post_attention_layernorm", img, eps), shift_mlp, scale_mlp)
    x_txt = _modulate(_layer_norm(sd, f"{layer}.post_attention_layernorm", text, eps), t_shift_mlp, t_scale_mlp)
    hidden = F.gelu(_linear(sd, f"{layer}.mlp.dense_h_to_4h", torch.cat([x_txt, x_img], dim=1)), approximate="tanh")
    out = _linear(sd, f"{layer}.mlp.dense_4h_to_h", hidden)
    return text + t_gate_mlp.unsqueeze(1) * out[:, :n_text], img + gate_mlp.unsqueeze(1) * out[:, n_text:]


def test_a_block_computed_the_sat_way_from_the_sat_file_equals_the_diffusers_block(sat_and_model):
    sd, model = sat_and_model
    cfg = model.config
    gen = torch.Generator().manual_seed(0)
    h = cfg.num_attention_heads * cfg.attention_head_dim
    text, img = torch.randn(2, 5, h, generator=gen), torch.randn(2, 12, h, generator=gen)
    emb = torch.randn(2, cfg.time_embed_dim, generator=gen)
    with torch.no_grad():
        for i, block in enumerate(model.transformer_blocks):
            want_img, want_text = block(img, text, emb)
            got_text, got_img = sat_block(sd, i, text, img, emb, cfg.num_attention_heads, cfg.norm_eps)
            torch.testing.assert_close(got_img, want_img, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(got_text, want_text, rtol=1e-5, atol=1e-5)


def test_the_final_layer_computed_the_sat_way_equals_diffusers(sat_and_model):
    sd, model = sat_and_model
    cfg = model.config
    gen = torch.Generator().manual_seed(1)
    h = cfg.num_attention_heads * cfg.attention_head_dim
    x, emb = torch.randn(2, 12, h, generator=gen), torch.randn(2, cfg.time_embed_dim, generator=gen)
    with torch.no_grad():
        want = model.proj_out(model.norm_out(model.norm_final(x), temb=emb))
        x_sat = _layer_norm(sd, "transformer.final_layernorm", x, cfg.norm_eps)
        shift, scale = _linear(sd, "mixins.final_layer.adaLN_modulation.1", F.silu(emb)).chunk(2, dim=1)
        x_sat = _modulate(_layer_norm(sd, "mixins.final_layer.norm_final", x_sat, cfg.norm_eps), shift, scale)
        got = _linear(sd, "mixins.final_layer.linear", x_sat)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_time_and_ofs_embeddings_keep_their_linears(sat_and_model):
    sd, model = sat_and_model
    gen = torch.Generator().manual_seed(2)
    t = torch.randn(3, model.time_embedding.linear_1.in_features, generator=gen)
    with torch.no_grad():
        want = model.time_embedding(t)
        got = _linear(sd, "time_embed.2", F.silu(_linear(sd, "time_embed.0", t)))
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        if model.ofs_embedding is not None:
            o = torch.randn(3, 512, generator=gen)
            got = _linear(sd, "ofs_embed.2", F.silu(_linear(sd, "ofs_embed.0", o)))
            torch.testing.assert_close(got, model.ofs_embedding(o), rtol=1e-6, atol=1e-6)
