"""SAT LoRA export: a CogVideoX SAT LoraMixin checkpoint becomes a scale-1 PEFT LoRA diffusers loads.

The SAT LoRA is built here from the documented layout (reference checkpoint-formats.md §2:
``query_key_value.matrix_A.{0,1,2}`` [r, h], ``matrix_B.{j}`` [h, r], ``dense.matrix_{A,B}.0``,
base weights under ``.original``; forward adds (x A^T) B^T * alpha / r per output chunk), for a
tiny 5B-style model with 3 layers (not 30: the upstream script's hard-coded 240 tensors would refuse
it). The oracle is the SAT-merged model: W + chunkwise B A * alpha / r, converted to Diffusers by
vqtool's SAT table and loaded strictly.
"""

from __future__ import annotations

import json

import pytest
import torch

from vqtool.errors import InputError, MappingError, OutputExistsError

LAYERS = 3
RANK = 8
PREFIX = "model.diffusion_model."


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny_5b():
    from diffusers import CogVideoXTransformer3DModel

    from vqtool.testing.cogvideox import TINY_TRANSFORMER, randomize_

    return randomize_(CogVideoXTransformer3DModel(**dict(TINY_TRANSFORMER["5b"], num_layers=LAYERS)), 0).eval()


def _sat_names(model) -> dict[str, torch.Tensor]:
    from vqtool.mapping import iter_converted, plan_conversion
    from vqtool.testing import DictStore

    store = DictStore(dict(model.state_dict()), config=dict(model.config))
    return {n: t.clone() for n, t in iter_converted(store, plan_conversion(store, "sat"))}


def sat_lora_state(sat: dict[str, torch.Tensor], rank: int, seed: int = 1, dtype=torch.float32):
    """(SAT LoRA checkpoint keys without prefix, SAT-merged weights) for ``sat`` with ``alpha`` = 1."""
    gen = torch.Generator().manual_seed(seed)
    lora, merged = {}, dict(sat)
    for i in range(LAYERS):
        for module, parts in ((f"transformer.layers.{i}.attention.query_key_value", 3),
                              (f"transformer.layers.{i}.attention.dense", 1)):
            w = sat.pop(f"{module}.weight")
            lora[f"{module}.original.weight"] = w
            lora[f"{module}.original.bias"] = sat.pop(f"{module}.bias")
            deltas = []
            for j in range(parts):
                a = (torch.randn(rank, w.shape[1], generator=gen) * 0.3).to(dtype)
                b = (torch.randn(w.shape[0] // parts, rank, generator=gen) * 0.3).to(dtype)
                lora[f"{module}.matrix_A.{j}"], lora[f"{module}.matrix_B.{j}"] = a, b
                deltas.append(b.float() @ a.float() * (1.0 / rank))
            merged[f"{module}.weight"] = w + torch.cat(deltas, dim=0)
    lora.update(sat)  # every other tensor of the model, as SAT saves the whole state dict
    return lora, merged


@pytest.fixture(scope="module")
def sat_case(tmp_path_factory):
    from vqtool.sat import write_transformer

    model = _tiny_5b()
    lora, merged = sat_lora_state(_sat_names(model), RANK)
    folder = tmp_path_factory.mktemp("sat_lora") / "CogVideoX-5b-tiny-lora"
    write_transformer(folder, lora.items())
    return {"model": model, "folder": folder, "merged": merged, "lora": lora}


def _merged_model(merged: dict[str, torch.Tensor]):
    from diffusers import CogVideoXTransformer3DModel

    from vqtool.mapping import iter_converted, plan_conversion
    from vqtool.testing import DictStore
    from vqtool.testing.cogvideox import TINY_TRANSFORMER

    store = DictStore({PREFIX + k: v for k, v in merged.items()})
    ref = CogVideoXTransformer3DModel(**dict(TINY_TRANSFORMER["5b"], num_layers=LAYERS)).eval()
    missing, unexpected = ref.load_state_dict(dict(iter_converted(store, plan_conversion(store, "diffusers"))), strict=True)
    assert not missing and not unexpected
    return ref


def _pipeline(transformer):
    from diffusers import CogVideoXPipeline

    return CogVideoXPipeline(tokenizer=None, text_encoder=None, vae=None, scheduler=None, transformer=transformer)


def test_sat_lora_loads_in_diffusers_and_matches_the_sat_merged_model(sat_case, tmp_path):
    from vqtool.lora.export_sat import export_sat
    from vqtool.testing.cogvideox import transformer_inputs

    out = tmp_path / "pytorch_lora_weights.safetensors"
    result = export_sat(sat_case["folder"], out)
    assert result["modules"] == 2 * LAYERS and result["layers"] == 4 * LAYERS and result["ranks"] == [RANK]
    inputs = transformer_inputs(sat_case["model"])
    with torch.no_grad():
        want = _merged_model(sat_case["merged"])(**inputs)[0]
        base = sat_case["model"](**inputs)[0]
        pipe = _pipeline(_tiny_5b())
        pipe.load_lora_weights(str(out))
        got = pipe.transformer(**inputs)[0]
    assert (want - base).norm() / want.norm() > 0.05  # the LoRA matters
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_sat_export_names_every_layer_without_a_hard_coded_count(sat_case, tmp_path):
    from safetensors import safe_open

    from vqtool.lora.export_sat import export_sat

    out = tmp_path / "lora.safetensors"
    export_sat(sat_case["folder"], out)
    with safe_open(str(out), "pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
        qa = f.get_tensor("transformer.transformer_blocks.2.attn1.to_q.lora_A.weight")
        vb = f.get_tensor("transformer.transformer_blocks.2.attn1.to_v.lora_B.weight")
    expected = {f"transformer.transformer_blocks.{i}.attn1.{m}.lora_{ab}.weight"
                for i in range(LAYERS) for m in ("to_q", "to_k", "to_v", "to_out.0") for ab in "AB"}
    assert keys == expected  # 24 tensors: not 240
    lora = sat_case["lora"]
    base = "transformer.layers.2.attention.query_key_value"
    torch.testing.assert_close(qa, lora[f"{base}.matrix_A.0"])  # no transpose
    torch.testing.assert_close(vb, lora[f"{base}.matrix_B.2"] / RANK)  # alpha / r folded into lora_B
    config = json.loads(meta["lora_adapter_metadata"])
    assert config["transformer.r"] == config["transformer.lora_alpha"] == RANK  # PEFT scale 1


def test_sat_alpha_option_scales_lora_b(sat_case, tmp_path):
    from safetensors.torch import load_file

    from vqtool.lora.export_sat import export_sat

    export_sat(sat_case["folder"], tmp_path / "a1.safetensors")
    export_sat(sat_case["folder"], tmp_path / "a4.safetensors", alpha=4)
    one, four = load_file(str(tmp_path / "a1.safetensors")), load_file(str(tmp_path / "a4.safetensors"))
    key = "transformer.transformer_blocks.0.attn1.to_out.0.lora_B.weight"
    torch.testing.assert_close(four[key], one[key] * 4)


def test_sat_export_to_comfy_keeps_the_fused_sat_layer_exactly(sat_case, tmp_path):
    """ComfyUI-style output on SAT names: one LoRA per fused query_key_value, rank 3r, product = the SAT delta."""
    from safetensors.torch import load_file

    from vqtool.lora.export_sat import export_sat

    out = tmp_path / "comfy.safetensors"
    export_sat(sat_case["folder"], out, fmt="comfy")
    sd = load_file(str(out))
    key = PREFIX + "transformer.layers.1.attention.query_key_value"
    down, up, alpha = sd[f"{key}.lora_down.weight"], sd[f"{key}.lora_up.weight"], sd[f"{key}.alpha"]
    assert down.shape[0] == 3 * RANK and float(alpha) == 3 * RANK
    module = "transformer.layers.1.attention.query_key_value"
    want = sat_case["merged"][f"{module}.weight"] - sat_case["lora"][f"{module}.original.weight"]
    torch.testing.assert_close(up @ down * (float(alpha) / down.shape[0]), want, rtol=1e-5, atol=1e-6)


def test_sat_export_accepts_the_bare_model_states_file(sat_case, tmp_path):
    from vqtool.lora.export_sat import export_sat

    pt = next(sat_case["folder"].glob("transformer/*/mp_rank_00_model_states.pt"))
    result = export_sat(pt, tmp_path / "lora.safetensors")
    assert result["layers"] == 4 * LAYERS
    assert result["ignored_reasons"] == ["base model tensor, not part of the LoRA",
                                         "base weight of a LoRA-wrapped layer (SAT LoraMixin .original)"]


def test_sat_export_refuses_a_missing_partition(sat_case, tmp_path):
    from vqtool.lora.export_sat import export_sat
    from vqtool.sat import write_transformer

    broken = {k: v for k, v in sat_case["lora"].items() if k != "transformer.layers.1.attention.query_key_value.matrix_B.2"}
    folder = tmp_path / "broken"
    write_transformer(folder, broken.items())
    with pytest.raises(MappingError, match=r"layers\.1\.attention\.query_key_value.*matrix_B parts \[0, 1\]"):
        export_sat(folder, tmp_path / "x.safetensors")


def test_sat_export_refuses_a_plain_checkpoint_and_existing_output(sat_case, tmp_path):
    from vqtool.lora.export_sat import export_sat
    from vqtool.sat import write_transformer

    plain = tmp_path / "plain"
    write_transformer(plain, _sat_names(sat_case["model"]).items())
    with pytest.raises(InputError, match="no SAT LoRA tensors"):
        export_sat(plain, tmp_path / "x.safetensors")
    out = tmp_path / "exists.safetensors"
    out.write_bytes(b"")
    with pytest.raises(OutputExistsError):
        export_sat(sat_case["folder"], out)


def test_cli_lora_export_sat(sat_case, tmp_path):
    from click.testing import CliRunner

    from vqtool.cli import cli

    out = tmp_path / "cli.safetensors"
    res = CliRunner().invoke(cli, ["lora", "export-sat", str(sat_case["folder"]), "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["layers"] == 4 * LAYERS and out.exists()
