"""torchao export (`vqtool quantize --format torchao`): a Diffusers folder diffusers reloads on its own.

The oracle is diffusers itself: the exported folder is loaded with plain
``WanTransformer3DModel.from_pretrained`` (no vqtool code), its Linear weights must be torchao
tensors except the roles every policy keeps, and its output must stay close to the
full-precision model's on the same inputs.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from vqtool.errors import OutputExistsError, PolicyError
from vqtool.testing import wan

pytest.importorskip("torchao")


def _psnr(ref: torch.Tensor, out: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).mean() / (out.float() - ref).pow(2).mean()))


def _inputs(dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 2, 8, 8, generator=g)
    text = torch.randn(1, 8, 64, generator=g)
    return x.to(dtype), torch.tensor([500]), text.to(dtype)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Wan T2V in the original single-file layout (from_pretrained cannot read it; the export maps it)."""
    root = tmp_path_factory.mktemp("torchao")
    model = wan.build_transformer("t2v", seed=3)
    return model, wan.write_transformer(model, root, "original"), root


@pytest.fixture(scope="module")
def exported(tiny):
    from vqtool.publish.torchao_export import export_torchao

    model, src, root = tiny
    out = root / "wan-int8"
    result = export_torchao(src, out, "int8-weight-only", dtype="f32")
    return model, out, result


def test_int8_export_loads_in_plain_diffusers_and_stays_close_to_full_precision(exported):
    from diffusers import WanTransformer3DModel
    from torchao.utils import TorchAOBaseTensor

    model, out, result = exported
    loaded = WanTransformer3DModel.from_pretrained(out, torch_dtype=torch.float32).eval()
    assert isinstance(loaded.blocks[0].attn1.to_q.weight, TorchAOBaseTensor)
    assert isinstance(loaded.blocks[1].ffn.net[2].weight, TorchAOBaseTensor)
    # The roles every GGUF policy keeps stay plain here too (head, text/time embeddings).
    for kept in (loaded.proj_out, loaded.condition_embedder.text_embedder.linear_1, loaded.condition_embedder.time_proj):
        assert not isinstance(kept.weight, TorchAOBaseTensor)
        assert kept.weight.dtype == torch.float32
    with torch.no_grad():
        ref = model(*_inputs()).sample
        got = loaded(*_inputs()).sample
    assert 35 < _psnr(ref, got) < 80  # int8 per-row: close, but really quantized


def test_export_writes_provenance_for_model_cards(exported, tiny):
    _, out, result = exported
    prov = json.loads((out / "vqtool.json").read_text())
    assert prov["policy"] == "int8-weight-only" and prov["config"] == "Int8WeightOnlyConfig"
    assert (prov["family"], prov["variant"]) == ("wan", "t2v-custom")
    assert prov["source"]["files"] == ["wan_original.safetensors"] and prov["source"]["sha256"][0].startswith("sha256:")
    types = {w["role"]: w["type"] for w in prov["weights"].values()}
    assert types["ffn.up"] == types["attn.self.q"] == "torchao Int8WeightOnly"
    assert types["head"] == "F32"
    assert set(result.quantized) == {n[: -len(".weight")] for n, w in prov["weights"].items() if w["type"].startswith("torchao")}
    assert 0 < prov["bits_per_weight"] < 32
    # No temporary folder is left behind; only the export remains.
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []


def test_bf16_export_from_a_diffusers_folder_leaves_the_source_untouched(tiny, tmp_path):
    from vqtool.publish.torchao_export import export_torchao, load_torchao_transformer

    model, _, _ = tiny
    folder = wan.write_transformer(model, tmp_path, "diffusers")
    before = sorted(os.listdir(folder))
    result = export_torchao(folder, tmp_path / "out", "int8-dynamic")
    assert sorted(os.listdir(folder)) == before
    loaded = load_torchao_transformer(tmp_path / "out")
    assert loaded.proj_out.weight.dtype == torch.bfloat16
    with torch.no_grad():
        ref = model(*_inputs()).sample
        got = loaded(*_inputs(torch.bfloat16)).sample
    assert _psnr(ref, got) > 25
    assert result.dtype == "bfloat16"


def test_streamed_export_equals_diffusers_own_torchao_load_bit_for_bit(tiny, tmp_path):
    """vqtool feeds diffusers' quantizer one tensor at a time; the files must equal diffusers' own path."""
    from diffusers import TorchAoConfig, WanTransformer3DModel
    from safetensors import safe_open

    from vqtool.publish.torchao_export import export_torchao, read_provenance
    from vqtool.publish.torchao_policy import get_torchao_policy

    model, _, _ = tiny
    folder = wan.write_transformer(model, tmp_path, "diffusers")
    export_torchao(folder, tmp_path / "vqtool", "int8-weight-only")
    kept = sorted(read_provenance(tmp_path / "vqtool")["kept"])
    theirs = WanTransformer3DModel.from_pretrained(
        folder, torch_dtype=torch.bfloat16,
        quantization_config=TorchAoConfig(get_torchao_policy("int8-weight-only").make_config(), modules_to_not_convert=kept))
    theirs.save_pretrained(tmp_path / "diffusers", safe_serialization=True)
    files = [safe_open(str(p / "diffusion_pytorch_model.safetensors"), "pt") for p in (tmp_path / "vqtool", tmp_path / "diffusers")]
    assert files[0].keys() == files[1].keys() and files[0].metadata() == files[1].metadata()
    for key in files[0].keys():
        a, b = files[0].get_tensor(key), files[1].get_tensor(key)
        assert a.dtype == b.dtype and torch.equal(a, b), key
    ours = json.loads((tmp_path / "vqtool" / "config.json").read_text())["quantization_config"]
    assert ours == json.loads((tmp_path / "diffusers" / "config.json").read_text())["quantization_config"]


def test_existing_output_is_kept_without_overwrite_and_replaced_with_it(exported, tiny):
    from vqtool.publish.torchao_export import export_torchao

    _, out, _ = exported
    _, src, _ = tiny
    stamp = (out / "vqtool.json").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="--overwrite"):
        export_torchao(src, out, "int8-weight-only", dtype="f32")
    assert (out / "vqtool.json").stat().st_mtime_ns == stamp
    export_torchao(src, out, "float8-weight-only", dtype="f32", overwrite=True, hash_sources=False)
    assert json.loads((out / "vqtool.json").read_text())["policy"] == "float8-weight-only"
    export_torchao(src, out, "int8-weight-only", dtype="f32", overwrite=True)  # restore for the other tests


def test_torchao_policies_are_data_and_stay_out_of_the_gguf_registry():
    from vqtool.publish.torchao_policy import get_torchao_policy, torchao_policies
    from vqtool.quant.policy import builtin_policies

    names = set(torchao_policies())
    assert {"int8-weight-only", "int8-dynamic", "float8-weight-only", "float8-dynamic", "int4-weight-only"} <= names
    assert not names & set(builtin_policies().policies)
    assert get_torchao_policy("int4-weight-only").args == {"group_size": 128}
    with pytest.raises(PolicyError, match="available: int8-weight-only"):
        get_torchao_policy("int3")


def test_gpu_only_policies_are_refused_on_cpu_before_any_work(tiny, tmp_path):
    from vqtool.publish.torchao_export import export_torchao

    _, src, _ = tiny
    with pytest.raises(PolicyError, match="float8-dynamic runs on cuda, not cpu.*8.9"):
        export_torchao(src, tmp_path / "x", "float8-dynamic")
    assert not (tmp_path / "x").exists()


def test_quantize_format_torchao_dry_run_shows_what_each_role_gets(tiny):
    from click.testing import CliRunner

    from vqtool.cli import cli

    _, src, root = tiny
    res = CliRunner().invoke(cli, ["quantize", str(src), "--format", "torchao", "--policy", "int8-weight-only",
                                   "-o", str(root / "dry"), "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.output)[0]
    assert plan["output"] == str(root / "dry") and plan["class"] == "WanTransformer3DModel"
    assert plan["by_role"]["ffn.up"] == {"quantize": 2, "keep": 0}
    assert plan["by_role"]["head"] == {"quantize": 0, "keep": 1}
    assert not (root / "dry").exists()
    res = CliRunner().invoke(cli, ["quantize", str(src), "--format", "torchao", "--policy", "int8-weight-only",
                                   "--override", "blocks.0.*=Q8_0", "-o", str(root / "dry")])
    assert res.exit_code != 0 and "--override apply to GGUF policies only" in str(res.exception)


@pytest.mark.parametrize("variant", ["2b", "1.5-i2v"])
def test_cogvideox_int8_export_loads_in_plain_diffusers(variant, tmp_path):
    """CogVideoX's own quantized demo uses int8 weight-only; the 2B's width 320 is no multiple of 256."""
    from diffusers import CogVideoXTransformer3DModel
    from torchao.utils import TorchAOBaseTensor

    from vqtool.publish.torchao_export import export_torchao
    from vqtool.testing import cogvideox

    model = cogvideox.build_transformer(variant, 0)
    model.save_pretrained(tmp_path / "src")
    result = export_torchao(tmp_path / "src", tmp_path / "out", "int8-weight-only", dtype="f32")
    assert (result.family, result.variant) == ("cogvideox", variant)
    loaded = CogVideoXTransformer3DModel.from_pretrained(tmp_path / "out", torch_dtype=torch.float32).eval()
    assert isinstance(loaded.transformer_blocks[0].ff.net[2].weight, TorchAOBaseTensor)
    assert not isinstance(loaded.proj_out.weight, TorchAOBaseTensor)
    with torch.no_grad():
        ref = model(**cogvideox.transformer_inputs(model))[0]
        got = loaded(**cogvideox.transformer_inputs(model))[0]
    assert _psnr(ref, got) > 30
