"""The canonical graph: role vocabulary, per-tensor roles and blocks, as policies will query them."""

from __future__ import annotations

import pytest

from vqtool.graph import Role
from vqtool.mapping import build_graph, load_registry
from vqtool.testing import DictStore
from vqtool.testing.wan import meta_state_dict


def test_role_vocabulary_is_fixed():
    assert Role.parse("attn.image.k") is Role.ATTN_IMAGE_K
    with pytest.raises(ValueError, match="roles are"):
        Role.parse("attention.q")


def test_every_canonical_row_declares_a_known_role():
    for table in load_registry().canonical.values():
        assert table.rows, table.source
        assert all(isinstance(r.role, Role) for r in table.rows)


def test_vace_14b_graph_by_role_and_block():
    graph = build_graph(DictStore(meta_state_dict("transformer", "vace-14B")))
    assert (graph.family, graph.variant, graph.component) == ("wan", "vace-14B", "transformer")
    assert len(graph) == 1331 and round(graph.num_params() / 1e9, 3) == 17.338  # reference §5
    assert graph.blocks("main") == list(range(40)) and graph.blocks("vace") == list(range(8))
    q = graph.by_role(Role.ATTN_SELF_Q)
    assert len(q) == 2 * (40 + 8)  # weight + bias per block
    assert {t.block_kind for t in graph.by_role("vace.proj")} == {"vace"}
    assert [t.name for t in graph.by_role(Role.HEAD)] == ["head.head.weight", "head.head.bias"]
    assert graph["blocks.39.ffn.0.weight"].shape == (13824, 5120)


def test_i2v_graph_has_image_cross_attention_roles():
    graph = build_graph(DictStore(meta_state_dict("transformer", "i2v-14B")))
    assert len(graph.by_role(Role.ATTN_IMAGE_K)) == len(graph.by_role(Role.ATTN_IMAGE_V)) == 80
    assert graph["img_emb.proj.1.weight"].role is Role.EMBED_IMAGE


def test_graph_refuses_incomplete_models():
    from vqtool.errors import MappingError

    sd = meta_state_dict("transformer", "t2v-1.3B")
    del sd["blocks.7.attn2.to_k.weight"]
    with pytest.raises(MappingError, match=r"blocks\.7\.cross_attn\.k\.weight"):
        build_graph(DictStore(sd))
