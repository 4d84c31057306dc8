"""CogVideoX GGUF files (every variant) load through vqtool's own loader with weights kept quantized;
Wan files give the same model through vqtool's loader as through diffusers' own."""

from __future__ import annotations

import pytest
import torch

from vqtool.loader import load_gguf_transformer
from vqtool.quant.run import quantize_model
from vqtool.testing import cogvideox as cx
from vqtool.testing import wan

SAMPLE = ["f32", "bf16", "q8_0", "mixed-q4", "q4_k_m", "q2_k"]

def _rel(a, b) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("variant", cx.VARIANTS)
def test_cogvideox_gguf_loads_in_vqtool_loader_with_error_ordered_by_bits(variant, tmp_path):
    import gguf
    from diffusers.quantizers.gguf.utils import GGUFLinear, GGUFParameter

    from vqtool.quant.policy import builtin_policies

    model = cx.build_transformer(variant, seed=0)
    folder = cx.save_diffusers(model, tmp_path / "src")
    # every policy on the two widths (2B-like falls back, 5B-like does not); a cross-section elsewhere
    policies = list(builtin_policies().policies) if variant in ("2b", "5b") else SAMPLE
    run = quantize_model(str(folder), [(p, str(tmp_path / f"{p}.gguf")) for p in policies], progress=False)
    assert gguf.GGUFReader(str(tmp_path / "q4_k_m.gguf")).fields["general.architecture"].contents() == "cogvideox"
    inputs = cx.transformer_inputs(model, seed=0)
    with torch.no_grad():
        ref = model(**inputs)[0]
    errors = {}
    for p in policies:
        loaded = load_gguf_transformer(tmp_path / f"{p}.gguf")
        with torch.no_grad():
            errors[p] = _rel(loaded(**inputs)[0], ref)
        if p == "q4_k_m":
            linear = loaded.transformer_blocks[0].ff.net[0].proj
            assert isinstance(linear, GGUFLinear) and isinstance(linear.weight, GGUFParameter)
            assert linear.weight.dtype == torch.uint8  # raw blocks: Q4 memory, dequantized per forward
    assert errors["f32"] == 0.0
    assert errors["q8_0"] < errors["q4_k_m"] < errors["q2_k"] < 0.5, errors
    assert all(e < 0.5 for e in errors.values()), errors
    if variant == "2b":  # width 320 is not a multiple of 256: K-quants fall back, and it is reported
        fallbacks = run.outputs[policies.index("q4_k_m")].plan.fallbacks
        assert fallbacks and {d.type for d in fallbacks} <= {"Q5_0", "Q8_0"}


def test_cogvideox_sat_folder_quantizes_like_its_diffusers_twin(tmp_path):
    import gguf
    import numpy as np

    sat = cx.save_sat("5b", tmp_path / "sat", seed=3)
    diff = cx.save_diffusers(cx.build_transformer("5b", seed=3), tmp_path / "diffusers")
    quantize_model(str(sat), [("q4_k_m", str(tmp_path / "a.gguf"))], progress=False)
    quantize_model(str(diff), [("q4_k_m", str(tmp_path / "b.gguf"))], progress=False)
    a = {t.name: t for t in gguf.GGUFReader(str(tmp_path / "a.gguf")).tensors}
    b = {t.name: t for t in gguf.GGUFReader(str(tmp_path / "b.gguf")).tensors}
    assert set(a) == set(b)
    for name in a:
        assert np.array_equal(np.asarray(a[name].data), np.asarray(b[name].data)), name


def test_wan_gguf_through_vqtool_loader_equals_diffusers_single_file(tmp_path):
    from diffusers import GGUFQuantizationConfig, WanTransformer3DModel

    model = wan.build_transformer("t2v", seed=9)
    folder = wan.write_transformer(model, tmp_path, "diffusers")
    src = wan.write_transformer(model, tmp_path, "original")
    quantize_model(str(src), [("q4_k_m", str(tmp_path / "w.gguf"))], progress=False)
    ours = load_gguf_transformer(tmp_path / "w.gguf", config=str(folder))
    theirs = WanTransformer3DModel.from_single_file(
        str(tmp_path / "w.gguf"), quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32),
        config=str(folder), torch_dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    x = dict(hidden_states=torch.randn(1, 16, 3, 8, 8, generator=g), timestep=torch.tensor([300]),
             encoder_hidden_states=torch.randn(1, 5, 64, generator=g), return_dict=False)
    with torch.no_grad():
        assert torch.allclose(ours(**x)[0], theirs(**x)[0], atol=1e-5, rtol=1e-5)
    # without a config folder, the derived config gives the same model
    derived = load_gguf_transformer(tmp_path / "w.gguf")
    with torch.no_grad():
        assert torch.allclose(derived(**x)[0], theirs(**x)[0], atol=1e-5, rtol=1e-5)


def test_bf16_source_loads_through_vqtool_loader(tmp_path):
    """Files from BF16 sources keep embeddings in BF16; the loader must not leave them as raw bytes."""
    model = wan.build_transformer("t2v", seed=13).to(torch.bfloat16)
    src = wan.write_transformer(model, tmp_path, "original")
    quantize_model(str(src), [("q4_k_m", str(tmp_path / "b.gguf"))], progress=False)
    loaded = load_gguf_transformer(tmp_path / "b.gguf")
    ref = model.float()
    g = torch.Generator().manual_seed(0)
    x = dict(hidden_states=torch.randn(1, 16, 3, 8, 8, generator=g), timestep=torch.tensor([300]),
             encoder_hidden_states=torch.randn(1, 5, 64, generator=g), return_dict=False)
    with torch.no_grad():
        assert _rel(loaded(**x)[0], ref(**x)[0]) < 0.05
