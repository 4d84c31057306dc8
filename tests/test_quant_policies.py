"""Policies resolve to the per-tensor types written in the tables below (tiny Wan models, no data read)."""

from __future__ import annotations

import pytest

from vqtool.errors import PolicyError
from vqtool.quant.plan import resolve
from vqtool.quant.policy import Policy, PolicyRegistry, builtin_policies, get_policy, load_policy_file, use_more_bits
from vqtool.testing import wan

BUILTIN = [
    "mixed-q8", "mixed-q6", "mixed-q5", "mixed-q4", "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q4_k_m", "q4_k_s",
    "q3_k_m", "q3_k_s", "q2_k", "q5_0", "q5_1", "q4_0", "q4_1", "f16", "bf16", "f32",
]

# Tensors every policy keeps, with the type they get from an F32 source (consumer rules).
KEPT = {
    "patch_embedding.weight": "F32",            # 5-D Conv3d: no GGML op, stays F32
    "blocks.0.modulation": "F32",               # [1, 6, d] parameter table
    "head.modulation": "F32",
    "blocks.0.norm3.weight": "F32",
    "blocks.0.self_attn.norm_q.weight": "F32",
    "blocks.0.self_attn.q.bias": "F32",
    "text_embedding.0.weight": "F16",           # embeddings: never block-quantized
    "time_embedding.0.weight": "F16",
    "time_projection.1.weight": "F16",
    "head.head.weight": "F16",
}

# Policy -> (self q, self v, cross v, ffn up, ffn down) of block 0 in a 2-block T2V model.
EXPECTED_T2V = {
    "q8_0":     ("Q8_0", "Q8_0", "Q8_0", "Q8_0", "Q8_0"),
    "q6_k":     ("Q6_K", "Q6_K", "Q6_K", "Q6_K", "Q6_K"),
    "q5_k_m":   ("Q5_K", "Q6_K", "Q6_K", "Q5_K", "Q6_K"),
    "q5_k_s":   ("Q5_K", "Q5_K", "Q5_K", "Q5_K", "Q5_K"),
    "q4_k_m":   ("Q4_K", "Q6_K", "Q6_K", "Q4_K", "Q6_K"),
    "q4_k_s":   ("Q4_K", "Q5_K", "Q5_K", "Q4_K", "Q5_K"),
    "q3_k_m":   ("Q3_K", "Q5_K", "Q5_K", "Q3_K", "Q4_K"),
    "q3_k_s":   ("Q3_K", "Q3_K", "Q3_K", "Q3_K", "Q3_K"),
    "q2_k":     ("Q2_K", "Q3_K", "Q3_K", "Q2_K", "Q2_K"),
    "q5_0":     ("Q5_0", "Q5_0", "Q5_0", "Q5_0", "Q5_1"),
    "q5_1":     ("Q5_1", "Q5_1", "Q5_1", "Q5_1", "Q5_1"),
    "q4_0":     ("Q4_0", "Q4_0", "Q4_0", "Q4_0", "Q4_1"),
    "q4_1":     ("Q4_1", "Q4_1", "Q4_1", "Q4_1", "Q4_1"),
    "mixed-q8": ("F16", "F16", "F16", "Q8_0", "Q8_0"),
    "mixed-q6": ("F16", "F16", "F16", "Q6_K", "Q8_0"),
    "mixed-q5": ("F16", "F16", "F16", "Q5_K", "Q6_K"),
    "mixed-q4": ("F16", "F16", "F16", "Q4_K", "Q6_K"),
    "f16":      ("F16", "F16", "F16", "F16", "F16"),
    "bf16":     ("BF16", "BF16", "BF16", "BF16", "BF16"),
    "f32":      ("F32", "F32", "F32", "F32", "F32"),
}
BLOCK0 = ("blocks.0.self_attn.q.weight", "blocks.0.self_attn.v.weight", "blocks.0.cross_attn.v.weight",
          "blocks.0.ffn.0.weight", "blocks.0.ffn.2.weight")


def graph_of(variant="t2v", **config):
    """The canonical graph of a tiny Wan model in original naming, from shapes alone (meta device)."""
    import torch

    from vqtool.io.base import TensorInfo
    from vqtool.mapping import build_graph, plan_conversion
    from vqtool.testing import DictStore

    cfg = dict(wan.TINY_TRANSFORMER[variant], **config)
    with torch.device("meta"):
        model = wan.transformer_class(cfg)(**cfg)
    plan = plan_conversion(DictStore(model.state_dict()), "original")
    store = DictStore({})
    store._infos = {t.name: TensorInfo(t.name, t.shape, t.dtype, "<meta>", t.nbytes) for t in plan.tensors}
    return build_graph(store)


@pytest.fixture(scope="module")
def t2v_graph():
    return graph_of("t2v")


def test_every_builtin_policy_is_registered_once():
    assert list(builtin_policies().policies) == BUILTIN


@pytest.mark.parametrize("policy", BUILTIN)
def test_policy_plan_matches_the_table(policy, t2v_graph):
    plan = resolve(get_policy(policy), t2v_graph)
    types = {d.name: d.type for d in plan.decisions}
    assert tuple(types[n] for n in BLOCK0) == EXPECTED_T2V[policy]
    kept = {n: ("F32" if policy == "f32" else t) for n, t in KEPT.items()}
    if policy == "bf16":
        kept = {n: ("BF16" if t == "F16" else t) for n, t in kept.items()}
    assert {n: types[n] for n in KEPT} == kept
    assert not plan.fallbacks


def test_q4_k_s_bumps_only_the_first_four_v_projections_in_block_order():
    plan = resolve(get_policy("q4_k_s"), graph_of("t2v", num_layers=4))
    v = {d.name: d.type for d in plan.decisions if d.role in ("attn.self.v", "attn.cross.v") and d.name.endswith("weight")}
    assert v == {
        "blocks.0.cross_attn.v.weight": "Q5_K", "blocks.0.self_attn.v.weight": "Q5_K",
        "blocks.1.cross_attn.v.weight": "Q5_K", "blocks.1.self_attn.v.weight": "Q5_K",
        "blocks.2.cross_attn.v.weight": "Q4_K", "blocks.2.self_attn.v.weight": "Q4_K",
        "blocks.3.cross_attn.v.weight": "Q4_K", "blocks.3.self_attn.v.weight": "Q4_K",
    }


def test_mixed_q4_raises_ffn_down_of_first_and_last_two_blocks_main_and_vace():
    plan = resolve(get_policy("mixed-q4"), graph_of("vace", num_layers=6, vace_layers=[0, 2, 4]))
    down = {d.name: d.type for d in plan.decisions if d.role == "ffn.down" and d.name.endswith("weight")}
    assert down == {
        "blocks.0.ffn.2.weight": "Q6_K", "blocks.1.ffn.2.weight": "Q6_K", "blocks.2.ffn.2.weight": "Q4_K",
        "blocks.3.ffn.2.weight": "Q4_K", "blocks.4.ffn.2.weight": "Q6_K", "blocks.5.ffn.2.weight": "Q6_K",
        "vace_blocks.0.ffn.2.weight": "Q6_K", "vace_blocks.1.ffn.2.weight": "Q6_K", "vace_blocks.2.ffn.2.weight": "Q6_K",
    }
    types = {d.name: d.type for d in plan.decisions}
    assert types["vace_patch_embedding.weight"] == "F32"  # the second 5-D conv of VACE
    assert types["vace_blocks.0.self_attn.q.weight"] == "F16"


def test_i2v_image_cross_attention_follows_attention_rules():
    plan = resolve(get_policy("mixed-q8"), graph_of("i2v"))
    types = {d.name: d.type for d in plan.decisions}
    assert types["blocks.0.cross_attn.k_img.weight"] == "F16"
    assert types["img_emb.proj.1.weight"] == "F16"  # image embedding: never block-quantized
    q4 = {d.name: d.type for d in resolve(get_policy("q4_k_m"), graph_of("i2v")).decisions}
    assert q4["blocks.0.cross_attn.v_img.weight"] == "Q4_K"  # ComfyUI bumps .v.weight only


def test_rows_not_divisible_fall_back_through_the_table_and_are_reported():
    g = graph_of("t2v", num_attention_heads=1, ffn_dim=384)  # width 128, FFN 384
    plan = resolve(get_policy("q4_k_m"), g)
    types = {d.name: (d.type, d.fallback) for d in plan.decisions}
    assert types["blocks.0.self_attn.q.weight"] == ("Q5_0", ("Q4_K",))
    assert types["blocks.0.self_attn.v.weight"] == ("Q8_0", ("Q6_K",))
    assert types["blocks.0.ffn.2.weight"] == ("Q8_0", ("Q6_K",))  # rows of 384 elements
    assert len(plan.fallbacks) == 2 * 10  # 10 quantized weights per block
    q2 = {d.name: (d.type, d.fallback) for d in resolve(get_policy("q2_k"), g).decisions}
    assert q2["blocks.0.self_attn.q.weight"] == ("Q4_0", ("Q2_K",))


def test_overrides_come_before_the_policy_rules(t2v_graph):
    policy = get_policy("q4_k_m").with_overrides(["blocks.0.*=Q8_0", "role:ffn.down=q2_k"])
    types = {d.name: d.type for d in resolve(policy, t2v_graph).decisions}
    assert types["blocks.0.self_attn.q.weight"] == "Q8_0"
    assert types["blocks.0.ffn.2.weight"] == "Q8_0"  # the first matching override wins
    assert types["blocks.1.ffn.2.weight"] == "Q2_K"
    assert types["blocks.0.self_attn.q.bias"] == "F32"  # overrides cannot quantize a 1-D tensor
    assert types["blocks.0.modulation"] == "F32"


@pytest.mark.parametrize("text,message", [
    ("blocks.0.*", "write PATTERN=TYPE"),
    ("blocks.0.*=Q9_9", "unknown type 'Q9_9'"),
    ("=Q8_0", "empty pattern"),
])
def test_bad_overrides_are_clear(text, message):
    with pytest.raises(PolicyError, match=message):
        get_policy("q8_0").with_overrides([text])


def test_user_policy_file_and_its_errors(tmp_path, t2v_graph):
    good = tmp_path / "mine.toml"
    good.write_text('name = "mine"\ndefault = "Q8_0"\n[[rule]]\nroles = ["ffn.*"]\nblocks = "every:2"\ntype = "Q4_K"\n')
    policy = get_policy(str(good))
    types = {d.name: d.type for d in resolve(policy, t2v_graph).decisions}
    assert types["blocks.0.ffn.0.weight"] == "Q4_K" and types["blocks.1.ffn.0.weight"] == "Q8_0"
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ndefault = "Q8_0"\n[[rule]]\nroles = ["ffn.*"]\nblocks = "sometimes"\ntype = "Q4_K"\n')
    with pytest.raises(PolicyError, match="bad.toml: rule 1: .*blocks='sometimes'"):
        load_policy_file(str(bad))
    typo = tmp_path / "typo.toml"
    typo.write_text('name = "t"\ndefault = "Q8_0"\n[[rule]]\nrole = ["ffn.*"]\ntype = "Q4_K"\n')
    with pytest.raises(PolicyError, match=r"unknown keys \['role'\]"):
        load_policy_file(str(typo))
    with pytest.raises(PolicyError, match="unknown policy 'nope'"):
        get_policy("nope")


def test_registry_rejects_duplicate_names():
    reg = PolicyRegistry()
    reg.register(Policy("x", "", "Q8_0", source="a"))
    with pytest.raises(PolicyError, match="defined twice"):
        reg.register(Policy("x", "", "Q4_K", source="b"))


def test_use_more_bits_matches_llama_cpp_for_32_layers():
    chosen = [i for i in range(32) if use_more_bits(i, 32)]
    assert chosen == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]


def test_plan_sizes_and_bits_per_weight_add_up(t2v_graph):
    plan = resolve(get_policy("q4_k_m"), t2v_graph)
    by_role = plan.by("role")
    assert sum(r["bytes"] for r in by_role.values()) == plan.total_bytes
    ffn_up = by_role["ffn.up"]
    assert ffn_up["types"] == {"Q4_K": 2, "F32": 2}
    d = next(d for d in plan.decisions if d.name == "blocks.0.ffn.0.weight")
    assert d.nbytes == 512 * 256 // 256 * 144
