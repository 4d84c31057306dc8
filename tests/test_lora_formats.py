"""LoRA naming: every Linear of every Wan and CogVideoX variant has a key in every output format.

Protects: the Diffusers/PEFT names are real ``nn.Linear`` modules of the Diffusers model (PEFT
would otherwise skip them silently), the ComfyUI names are weights of the original checkpoint, the
GGUF names are vqtool's canonical names; a LoRA on fused SAT layers (query_key_value, adaLN) is
exact: its product equals the fused difference the table's own transform builds.
"""

from __future__ import annotations

import pytest
import torch

WAN = ("t2v", "i2v", "flf2v", "vace")
COG = ("2b", "5b", "5b-i2v", "1.5", "1.5-i2v")


def _model(family: str, variant: str):
    if family == "wan":
        from vqtool.testing import wan

        return wan.build_transformer(variant, seed=0)
    from vqtool.testing import cogvideox

    return cogvideox.build_transformer(variant, seed=0)


def _layers(graph, rank: int = 2, seed: int = 0):
    from vqtool.lora.extract import is_linear_weight
    from vqtool.lora.formats import LoraLayer

    gen = torch.Generator().manual_seed(seed)
    return [LoraLayer(t.name, torch.randn(t.shape[0], rank, generator=gen), torch.randn(rank, t.shape[1], generator=gen))
            for t in graph if is_linear_weight(t)]


@pytest.mark.parametrize("family,variant", [("wan", v) for v in WAN] + [("cogvideox", v) for v in COG])
def test_every_linear_has_a_name_in_every_format(family, variant):
    from vqtool.lora.formats import named_factors
    from vqtool.mapping import build_graph, iter_converted, plan_conversion
    from vqtool.testing import DictStore

    model = _model(family, variant)
    store = DictStore({k: v.detach() for k, v in model.state_dict().items()}, config=dict(model.config))
    graph = build_graph(store)
    layers = _layers(graph)
    shapes = {t.name: tuple(t.shape) for t in graph}
    linears = {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}

    peft = {name.removesuffix(".weight") for name, _, _ in named_factors(layers, "diffusers", family, shapes=shapes)}
    assert peft == linears  # every Linear, and only Linears

    original_format = "original" if family == "wan" else "sat"
    original = {n for n, _ in iter_converted(store, plan_conversion(store, original_format))}
    comfy = named_factors(layers, "comfy", family, shapes=shapes)
    assert {name for name, _, _ in comfy} <= original
    assert sum(down.shape[0] for _, _, down in comfy) == sum(l.rank for l in layers)  # fused layers add ranks

    gguf = {name for name, _, _ in named_factors(layers, "gguf", family, shapes=shapes)}
    assert gguf == {l.name for l in layers}


def test_fused_sat_layers_carry_the_exact_difference():
    """query_key_value (chunk 3) and adaLN_modulations (12-way reorder of norm1/norm2): up @ down of the
    fused LoRA equals the table's fuse transform applied to the parts' differences."""
    from vqtool.lora.formats import named_factors
    from vqtool.mapping import build_graph, iter_converted, plan_conversion
    from vqtool.testing import DictStore

    model = _model("cogvideox", "5b")
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    graph = build_graph(DictStore(sd, config=dict(model.config)))
    layers = [l for l in _layers(graph, rank=3, seed=1) if l.name.startswith("transformer_blocks.1.")]
    shapes = {t.name: tuple(t.shape) for t in graph}
    fused = {name: up @ down for name, up, down in named_factors(layers, "comfy", "cogvideox", shapes=shapes)}
    # the oracle: add each part's difference in Diffusers names, convert both models to SAT, subtract
    tuned = dict(sd)
    for l in layers:
        tuned[l.name] = sd[l.name] + l.up @ l.down
    sat = {}
    for which, state in (("base", sd), ("tuned", tuned)):
        store = DictStore(state, config=dict(model.config))
        sat[which] = dict(iter_converted(store, plan_conversion(store, "sat")))
    for name in ("transformer.layers.1.attention.query_key_value.weight",
                 "mixins.adaln_layer.adaLN_modulations.1.1.weight"):
        torch.testing.assert_close(fused[name], sat["tuned"][name] - sat["base"][name], rtol=1e-4, atol=1e-5)
