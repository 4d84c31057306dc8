"""GGUF files from `vqtool quantize` load in diffusers and gguf-py, stay close to full precision
(error ordered by bits), carry complete metadata, and are written atomically."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vqtool.cli import cli
from vqtool.errors import NonFiniteError, OutputExistsError
from vqtool.quant.run import quantize_model
from vqtool.testing import wan

ORDERED = ["q8_0", "q5_k_m", "q4_k_m", "q2_k"]


@pytest.fixture(scope="module", params=["t2v", "i2v", "vace"])
def tiny(request, tmp_path_factory):
    """A tiny Wan model of each variant: its diffusers folder (config) and an original-naming file."""
    root = tmp_path_factory.mktemp(f"wan-{request.param}")
    model = wan.build_transformer(request.param, seed=1)
    folder = wan.write_transformer(model, root, "diffusers")
    original = wan.write_transformer(model, root, "original")
    return request.param, model, folder, original, root


def _inputs(variant: str, model):
    g = torch.Generator().manual_seed(0)
    cfg = model.config
    x = torch.randn(1, cfg.in_channels, 3, 8, 8, generator=g)
    kwargs = dict(hidden_states=x, timestep=torch.tensor([500]), encoder_hidden_states=torch.randn(1, 7, cfg.text_dim, generator=g))
    if variant == "i2v":
        kwargs["encoder_hidden_states_image"] = torch.randn(1, 5, cfg.image_dim, generator=g)
    if variant == "vace":
        kwargs["control_hidden_states"] = torch.randn(1, 96, 3, 8, 8, generator=g)
        kwargs["control_hidden_states_scale"] = torch.ones(len(cfg.vace_layers))
    return kwargs


def _load_gguf(path, variant, folder):
    from diffusers import GGUFQuantizationConfig

    cls = wan.transformer_class(dict(wan.TINY_TRANSFORMER[variant]))
    return cls.from_single_file(str(path), quantization_config=GGUFQuantizationConfig(compute_dtype=torch.float32),
                                config=str(folder), torch_dtype=torch.float32).eval()


def test_every_policy_loads_in_diffusers_with_error_ordered_by_bits(tiny, tmp_path):
    import gguf

    from vqtool.quant.policy import builtin_policies

    variant, model, folder, original, _ = tiny
    policies = list(builtin_policies().policies)
    run = quantize_model(str(original), [(p, str(tmp_path / f"{p}.gguf")) for p in policies], progress=False)
    assert [o.policy for o in run.outputs] == policies
    inputs = _inputs(variant, model)
    with torch.no_grad():
        ref = model(**inputs, return_dict=False)[0]
    errors = {}
    for p in policies:
        assert len(gguf.GGUFReader(str(tmp_path / f"{p}.gguf")).tensors) == len(run.outputs[0].plan.decisions)
        loaded = _load_gguf(tmp_path / f"{p}.gguf", variant, folder)
        with torch.no_grad():
            out = loaded(**inputs, return_dict=False)[0]
        errors[p] = ((out - ref).norm() / ref.norm()).item()
    assert all(e < 0.5 for e in errors.values()), errors
    assert errors["f32"] < 1e-6, errors
    assert [errors[p] for p in ORDERED] == sorted(errors[p] for p in ORDERED), errors
    assert errors["f16"] < 1e-3 and errors["q8_0"] < 0.01 and errors["q2_k"] < 0.5, errors
    assert errors["mixed-q4"] < errors["q4_k_m"], errors


def test_gguf_py_reads_every_tensor_and_metadata_round_trips(tiny, tmp_path):
    import gguf
    from gguf.quants import dequantize

    variant, model, folder, original, _ = tiny
    out = tmp_path / "m.gguf"
    run = quantize_model(str(original), [("q4_k_m", str(out))], progress=False)
    plan = run.outputs[0].plan
    reader = gguf.GGUFReader(str(out))
    kv = {k: f.contents() for k, f in reader.fields.items()}
    assert kv["general.architecture"] == "wan"
    assert kv["general.file_type"] == int(gguf.LlamaFileType.MOSTLY_Q4_K_M)
    assert kv["general.quantization_version"] == 2
    assert kv["vqtool.family"] == "wan" and kv["vqtool.variant"].startswith(variant)
    assert json.loads(kv["vqtool.config"]) == plan.config
    assert json.loads(kv["vqtool.policy"]) == plan.policy.to_dict()
    decisions = json.loads(kv["vqtool.plan"])
    assert {n: d["type"] for n, d in decisions.items()} == {d.name: d.type for d in plan.decisions}
    import hashlib

    assert kv["vqtool.source_sha256.0"] == "sha256:" + hashlib.sha256(original.read_bytes()).hexdigest()
    by_name = {t.name: t for t in reader.tensors}
    assert set(by_name) == {d.name for d in plan.decisions}
    sd = model.state_dict()
    for d in plan.decisions:
        t = by_name[d.name]
        assert t.tensor_type.name == d.type
        assert tuple(reversed(t.shape.tolist())) == d.shape  # 5-D conv weights stay 5-D
        values = dequantize(t.data, t.tensor_type).reshape(d.shape)
        assert np.isfinite(values).all()
    # every quantized tensor reproduces its source within its type's error
    from vqtool.io import open_store

    src = open_store(original)
    w = src.read("blocks.0.ffn.0.weight").numpy()
    q = dequantize(by_name["blocks.0.ffn.0.weight"].data, by_name["blocks.0.ffn.0.weight"].tensor_type).reshape(w.shape)
    assert np.linalg.norm(q - w) / np.linalg.norm(w) < 0.1
    assert len(sd) > 0


@pytest.mark.parametrize("fmt", ["comfy", "original-sharded", "diffusers"])
def test_any_input_format_gives_the_same_file_content(tmp_path, fmt):
    model = wan.build_transformer("t2v", seed=2)
    src = wan.write_transformer(model, tmp_path, fmt)
    ref_src = wan.write_transformer(model, tmp_path, "original")
    quantize_model(str(src), [("q4_k_m", str(tmp_path / "a.gguf"))], progress=False)
    quantize_model(str(ref_src), [("q4_k_m", str(tmp_path / "b.gguf"))], progress=False)
    import gguf

    a, b = gguf.GGUFReader(str(tmp_path / "a.gguf")), gguf.GGUFReader(str(tmp_path / "b.gguf"))
    ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
    assert set(ta) == set(tb)
    for name in ta:
        assert ta[name].tensor_type == tb[name].tensor_type
        assert np.array_equal(np.asarray(ta[name].data), np.asarray(tb[name].data)), name


def test_gguf_f16_input_is_requantized(tmp_path):
    model = wan.build_transformer("t2v", seed=3)
    src = wan.write_transformer(model, tmp_path, "original")
    quantize_model(str(src), [("f16", str(tmp_path / "f16.gguf"))], progress=False)
    run = quantize_model(str(tmp_path / "f16.gguf"), [("q8_0", str(tmp_path / "q8.gguf"))], progress=False)
    assert run.source_format == "gguf"
    assert any(d.type == "Q8_0" for d in run.outputs[0].plan.decisions)


def test_several_policies_read_each_source_tensor_once(tmp_path, monkeypatch):
    from vqtool.io.safetensors_file import SafetensorsFile

    model = wan.build_transformer("t2v", seed=4)
    src = wan.write_transformer(model, tmp_path, "original")
    reads: list[str] = []
    real = SafetensorsFile._read

    def counting(self, info):
        reads.append(info.name)
        return real(self, info)

    monkeypatch.setattr(SafetensorsFile, "_read", counting)
    quantize_model(str(src), [(p, str(tmp_path / f"{p}.gguf")) for p in ("mixed-q4", "q8_0", "q4_k_m")], progress=False)
    assert len(reads) == len(set(reads)) == len(model.state_dict())


def test_existing_output_is_refused_without_overwrite_and_left_untouched(tmp_path):
    model = wan.build_transformer("t2v", seed=5)
    src = wan.write_transformer(model, tmp_path, "original")
    out = tmp_path / "o.gguf"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="--overwrite"):
        quantize_model(str(src), [("q8_0", str(out))], progress=False)
    assert out.read_bytes() == b"precious"
    quantize_model(str(src), [("q8_0", str(out))], overwrite=True, progress=False)
    assert out.read_bytes()[:4] == b"GGUF"


def test_a_failure_midway_leaves_no_output_and_no_temporary_file(tmp_path, monkeypatch):
    import vqtool.quant.run

    monkeypatch.setattr(vqtool.quant.run, "SLICE_ELEMENTS", 256)  # one row per slice: the row is still global
    from safetensors.torch import save_file

    model = wan.build_transformer("t2v", seed=6)
    (tmp_path / "src").mkdir()
    src = wan.write_transformer(model, tmp_path / "src", "original")
    from safetensors.torch import load_file

    sd = load_file(src)
    sd["blocks.1.ffn.0.weight"][3, 7] = float("nan")
    save_file(sd, src)
    before = set(os.listdir(tmp_path / "src"))
    with pytest.raises(NonFiniteError, match="blocks.1.ffn.0.weight.*row 3"):
        quantize_model(str(src), [("q4_k_m", str(tmp_path / "src" / "bad.gguf"))], progress=False)
    assert set(os.listdir(tmp_path / "src")) == before


def test_cli_dry_run_json_and_real_run(tmp_path):
    model = wan.build_transformer("vace", seed=7)
    src = wan.write_transformer(model, tmp_path, "original")
    runner = CliRunner()
    res = runner.invoke(cli, ["quantize", str(src), "--policy", "mixed-q4,q4_k_m", "-o", str(tmp_path), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "policy mixed-q4" in res.output and "policy q4_k_m" in res.output and "estimated file size" in res.output
    assert not list(tmp_path.glob("*.gguf"))
    res = runner.invoke(cli, ["quantize", str(src), "--policy", "q4_k_m", "-o", str(tmp_path / "x.gguf"), "--dry-run", "--json"])
    plan = json.loads(res.output)[0]
    assert plan["by_role"]["ffn.down"]["types"] == {"Q6_K": 6, "F32": 6}
    res = runner.invoke(cli, ["quantize", str(src), "--policy", "q8_0,mixed-q8", "-o", str(tmp_path / "m-{policy}.gguf"), "--json"])
    assert res.exit_code == 0, res.output
    files = sorted(p.name for p in tmp_path.glob("m-*.gguf"))
    assert files == ["m-mixed-q8.gguf", "m-q8_0.gguf"]
    info = runner.invoke(cli, ["inspect", str(tmp_path / "m-q8_0.gguf"), "--json"])
    comp = next(iter(json.loads(info.output)["components"].values()))
    assert comp["gguf"]["ggml_types"]["Q8_0"] > 0


def test_dequantize_an_f32_file_returns_the_source_bit_exact(tmp_path):
    from vqtool.io import open_store

    model = wan.build_transformer("t2v", seed=8)
    src = wan.write_transformer(model, tmp_path, "original")
    quantize_model(str(src), [("f32", str(tmp_path / "f32.gguf"))], progress=False)
    res = CliRunner().invoke(cli, ["dequantize", str(tmp_path / "f32.gguf"), "-o", str(tmp_path / "back.safetensors")])
    assert res.exit_code == 0, res.output
    a, b = open_store(src), open_store(tmp_path / "back.safetensors")
    assert set(a.keys()) == set(b.keys())
    for name in a.keys():
        assert torch.equal(a.read(name), b.read(name)), name
    res = CliRunner().invoke(cli, ["dequantize", str(tmp_path / "f32.gguf"), "-o", str(tmp_path / "diffusers"), "--to", "diffusers"])
    assert res.exit_code == 0, res.output
    loaded = wan.transformer_class(dict(wan.TINY_TRANSFORMER["t2v"])).from_pretrained(str(tmp_path / "diffusers"))
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name


# What ComfyUI-GGUF's loader (city96/ComfyUI-GGUF loader.py, dequant.py, ops.py) requires of a Wan file;
# ComfyUI itself is not installable here, so its contract is checked instead of running it.
COMFY_IMAGE_ARCHES = {"flux", "sd1", "sdxl", "sd3", "aura", "hidream", "cosmos", "ltxv", "hyvid", "wan", "lumina2", "qwen_image"}
COMFY_TYPES = {"F32", "F16", "BF16", "Q8_0", "Q5_1", "Q5_0", "Q4_1", "Q4_0", "Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K",
               "IQ4_NL", "IQ4_XS"}


@pytest.mark.parametrize("policy", ["q4_k_m", "q3_k_s", "q5_0", "mixed-q4", "bf16"])
def test_wan_files_meet_the_comfyui_gguf_loader_contract(tmp_path, policy):
    import gguf

    from vqtool.io import open_store

    model = wan.build_transformer("vace", seed=10)
    src = wan.write_transformer(model, tmp_path, "comfy")  # a ComfyUI-prefixed input
    out = tmp_path / "c.gguf"
    quantize_model(str(src), [(policy, str(out))], progress=False)
    reader = gguf.GGUFReader(str(out))
    arch = reader.get_field("general.architecture")
    assert arch.types == [gguf.GGUFValueType.STRING] and arch.contents() in COMFY_IMAGE_ARCHES
    for key, field in reader.fields.items():
        if key.startswith("comfy.gguf.orig_shape."):
            assert field.types == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT32]
    original = {k[len(wan.COMFY_PREFIX):]: v for k, v in open_store(src).infos().items()}
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == set(original)  # original Wan names, no prefix: ComfyUI builds the model from them
    for name, t in tensors.items():
        assert t.tensor_type.name in COMFY_TYPES, name
        assert tuple(int(v) for v in reversed(t.shape)) == original[name].shape, name  # the shape ComfyUI sees
        if len(original[name].shape) != 2:  # ops.py has no Conv3d; 1-D/3-D params are used as-is
            assert t.tensor_type.name in ("F32", "F16", "BF16"), name
        if name.endswith("modulation"):  # "can't load from BF16"
            assert t.tensor_type.name == "F32", name
    assert tensors["vace_patch_embedding.weight"].tensor_type.name == "F32"
    assert tensors["patch_embedding.weight"].tensor_type.name == "F32"


def test_output_gets_normal_file_permissions(tmp_path):
    model = wan.build_transformer("t2v", seed=12)
    src = wan.write_transformer(model, tmp_path, "original")
    umask = os.umask(0o022)
    try:
        quantize_model(str(src), [("q8_0", str(tmp_path / "p.gguf"))], progress=False)
    finally:
        os.umask(umask)
    assert (tmp_path / "p.gguf").stat().st_mode & 0o777 == 0o644
