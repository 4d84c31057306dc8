"""The lazy tensor store reads every input kind: names/shapes/dtypes from headers, tensors bit-exact."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vqtool.io import GGUFFile, SafetensorsFile, TorchFile, open_checkpoint, open_store


def _sample_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "blocks.0.self_attn.q.weight": torch.randn(16, 32, generator=g),
        "blocks.0.self_attn.q.bias": torch.randn(16, generator=g).half(),
        "blocks.0.ffn.0.weight": torch.randn(64, 32, generator=g).bfloat16(),
        "blocks.0.modulation": torch.randn(1, 6, 32, generator=g),
        "patch_embedding.weight": torch.randn(32, 16, 1, 2, 2, generator=g),
        "fp8.e4m3": (torch.randn(8, 32, generator=g) * 4).to(torch.float8_e4m3fn),
        "fp8.e5m2": (torch.randn(8, 32, generator=g) * 4).to(torch.float8_e5m2),
        "steps": torch.arange(5, dtype=torch.int64),
    }


def assert_same_tensors(store, expected: dict[str, torch.Tensor]) -> None:
    assert set(store.keys()) == set(expected)
    for name, want in expected.items():
        info = store.infos()[name]
        assert info.shape == tuple(want.shape), name
        got = store.read(name)
        assert got.dtype == want.dtype, name
        assert torch.equal(got.reshape(-1).view(torch.uint8), want.contiguous().reshape(-1).view(torch.uint8)), name


def test_safetensors_file_lists_headers_and_reads_every_dtype_bit_exact(tmp_path):
    sd = _sample_state_dict()
    save_file(sd, tmp_path / "m.safetensors", metadata={"format": "pt", "note": "x"})
    with open_store(tmp_path / "m.safetensors") as store:
        assert isinstance(store, SafetensorsFile)
        assert store.metadata["note"] == "x"
        dtypes = {n: i.dtype for n, i in store.infos().items()}
        assert dtypes["fp8.e4m3"] == "F8_E4M3" and dtypes["fp8.e5m2"] == "F8_E5M2"
        assert dtypes["blocks.0.ffn.0.weight"] == "BF16" and dtypes["steps"] == "I64"
        assert store.infos()["patch_embedding.weight"].nbytes == 32 * 16 * 4 * 4
        assert_same_tensors(store, sd)


def _write_sharded(folder, sd, n_shards=3, stem="diffusion_pytorch_model", index=True):
    names = list(sd)
    weight_map = {}
    for i in range(n_shards):
        shard = f"{stem}-{i + 1:05d}-of-{n_shards:05d}.safetensors"
        part = {n: sd[n] for n in names[i::n_shards]}
        save_file(part, os.path.join(folder, shard))
        weight_map.update({n: shard for n in part})
    if index:
        with open(os.path.join(folder, f"{stem}.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": 0}, "weight_map": weight_map}, f)


def test_sharded_safetensors_with_index_reads_as_one_store(tmp_path):
    sd = _sample_state_dict(1)
    _write_sharded(tmp_path, sd)
    store = open_store(tmp_path / "diffusion_pytorch_model.safetensors.index.json")
    assert store.format == "safetensors-sharded"
    assert len(store.files) == 3
    assert_same_tensors(store, sd)
    # the same shards opened through their folder
    assert_same_tensors(open_store(tmp_path), sd)


def test_shard_set_without_index_is_merged_by_name_pattern(tmp_path):
    sd = _sample_state_dict(2)
    _write_sharded(tmp_path, sd, n_shards=2, index=False)
    store = open_store(tmp_path)
    assert store.format == "safetensors-sharded"
    assert_same_tensors(store, sd)


@pytest.mark.parametrize(
    "wrap,filename",
    [
        (lambda sd: sd, "plain.pt"),
        (lambda sd: {"module": sd, "iteration": 1000, "np_rng_state": np.random.RandomState(0).get_state()}, "mp_rank_00_model_states.pt"),
        (lambda sd: {"state_dict": sd, "epoch": 3, "global_step": 10}, "lightning.ckpt"),
        (lambda sd: {"model": {"state_dict": sd}}, "nested.pth"),
        (lambda sd: sd, "pytorch_model.bin"),
    ],
    ids=["plain", "sat-module", "lightning-state_dict", "nested-model-state_dict", "bin"],
)
def test_torch_pickles_are_unwrapped_and_read_with_weights_only(tmp_path, wrap, filename):
    sd = _sample_state_dict(3)
    torch.save(wrap(sd), tmp_path / filename)
    store = open_store(tmp_path / filename)
    assert isinstance(store, TorchFile)
    assert_same_tensors(store, sd)


def test_legacy_non_zip_pickle_is_read(tmp_path):
    sd = {"w": torch.randn(4, 4)}
    torch.save({"module": sd}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    assert_same_tensors(open_store(tmp_path / "old.pt"), sd)


def _write_gguf(path, tensors: dict[str, np.ndarray], quantized: dict[str, tuple] = (), kv: dict | None = None):
    import gguf

    w = gguf.GGUFWriter(str(path), "wan")
    for k, v in (kv or {}).items():
        if isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, list):
            w.add_array(k, v)
        else:
            w.add_uint32(k, v)
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    for name, (raw, qtype) in dict(quantized).items():
        w.add_tensor(name, raw, raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_lists_types_reads_plain_tensors_and_keeps_quantized_raw(tmp_path):
    import gguf
    from gguf.quants import dequantize, quantize

    rng = np.random.default_rng(0)
    w32 = rng.standard_normal((8, 64), dtype=np.float32)
    w16 = rng.standard_normal((4, 32)).astype(np.float16)
    conv = rng.standard_normal((8, 4, 1, 2, 2)).astype(np.float32)
    q = quantize(rng.standard_normal((4, 64), dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
    _write_gguf(
        tmp_path / "m.gguf", {"a.weight": w32, "b.weight": w16, "patch_embedding.weight": conv},
        {"ffn.weight": (q, gguf.GGMLQuantizationType.Q8_0)}, kv={"general.name": "tiny"},
    )
    store = open_store(tmp_path / "m.gguf")
    assert isinstance(store, GGUFFile)
    infos = store.infos()
    assert infos["ffn.weight"].dtype == "Q8_0" and infos["ffn.weight"].ggml_type == "Q8_0"
    assert infos["ffn.weight"].shape == (4, 64)
    assert infos["patch_embedding.weight"].shape == (8, 4, 1, 2, 2)
    assert infos["b.weight"].dtype == "F16"
    assert store.metadata["general.name"] == "tiny"
    assert np.array_equal(store.read("a.weight").numpy(), w32)
    assert np.array_equal(store.read("b.weight").numpy(), w16)
    assert np.array_equal(store.read("patch_embedding.weight").numpy(), conv)
    assert np.array_equal(store.read_raw("ffn.weight"), q.reshape(-1))
    assert np.array_equal(store.read("ffn.weight").numpy(), dequantize(q, gguf.GGMLQuantizationType.Q8_0))


def test_gguf_orig_shape_metadata_restores_the_logical_shape(tmp_path):
    rng = np.random.default_rng(1)
    flat = rng.standard_normal((8, 256), dtype=np.float32)
    _write_gguf(tmp_path / "r.gguf", {"w": flat}, kv={"comfy.gguf.orig_shape.w": [8, 16, 16]})
    store = open_store(tmp_path / "r.gguf")
    assert store.infos()["w"].shape == (8, 16, 16)
    assert np.array_equal(store.read("w").numpy(), flat.reshape(8, 16, 16))


def _save_model_folder(folder, sd, class_name, weights="diffusion_pytorch_model.safetensors"):
    os.makedirs(folder, exist_ok=True)
    save_file(sd, os.path.join(folder, weights))
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"_class_name": class_name}, f)


def test_diffusers_model_folder_carries_its_config_and_component(tmp_path):
    sd = _sample_state_dict(4)
    _save_model_folder(tmp_path / "transformer", sd, "WanTransformer3DModel")
    ckpt = open_checkpoint(tmp_path / "transformer")
    assert ckpt.format == "diffusers-model"
    assert list(ckpt.components) == ["transformer"]
    store = ckpt.components["transformer"]
    assert store.config == {"_class_name": "WanTransformer3DModel"}
    assert_same_tensors(store, sd)


def test_diffusers_pipeline_folder_opens_each_component(tmp_path):
    t, v, e = _sample_state_dict(5), {"decoder.conv_in.weight": torch.randn(4, 4)}, {"shared.weight": torch.randn(10, 4)}
    _save_model_folder(tmp_path / "transformer", t, "WanTransformer3DModel")
    _save_model_folder(tmp_path / "vae", v, "AutoencoderKLWan")
    _save_model_folder(tmp_path / "text_encoder", e, "UMT5EncoderModel", weights="model.safetensors")
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "tokenizer_config.json").write_text("{}")
    (tmp_path / "model_index.json").write_text(json.dumps({
        "_class_name": "WanPipeline", "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"], "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
    }))
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.format == "diffusers-pipeline"
    assert set(ckpt.components) == {"transformer", "vae", "text_encoder"}
    assert "tokenizer" in ckpt.extras
    assert_same_tensors(ckpt.components["vae"], v)
    assert_same_tensors(open_store(tmp_path), t)  # default component: transformer
    assert_same_tensors(open_store(tmp_path, component="text_encoder"), e)


def test_sat_folder_follows_latest_and_finds_the_vae(tmp_path):
    sd = {"model.diffusion_model.transformer.layers.0.attention.dense.weight": torch.randn(8, 8)}
    vae = {"encoder.conv_in.conv.weight": torch.randn(4, 3, 3, 3, 3), "loss.logvar": torch.zeros(())}
    (tmp_path / "transformer" / "1000").mkdir(parents=True)
    (tmp_path / "transformer" / "latest").write_text("1000\n")
    torch.save({"module": sd, "iteration": 1000}, tmp_path / "transformer" / "1000" / "mp_rank_00_model_states.pt")
    (tmp_path / "vae").mkdir()
    torch.save({"state_dict": vae}, tmp_path / "vae" / "3d-vae.pt")
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.format == "sat"
    assert_same_tensors(ckpt.components["transformer"], sd)
    assert_same_tensors(ckpt.components["vae"], vae)


def test_original_wan_folder_has_transformer_vae_and_umt5(tmp_path):
    sd = _sample_state_dict(6)
    _write_sharded(tmp_path, sd, n_shards=2)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "WanModel", "dim": 32}))
    vae = {"encoder.conv1.weight": torch.randn(4, 3, 3, 3, 3)}
    t5 = {"token_embedding.weight": torch.randn(10, 8).bfloat16()}
    torch.save(vae, tmp_path / "Wan2.1_VAE.pth")
    torch.save(t5, tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    ckpt = open_checkpoint(tmp_path)
    assert ckpt.format == "wan-original"
    assert list(ckpt.components) == ["transformer", "vae", "text_encoder"]
    assert ckpt.components["transformer"].config["dim"] == 32
    assert_same_tensors(ckpt.components["transformer"], sd)
    assert_same_tensors(ckpt.components["vae"], vae)
    assert_same_tensors(ckpt.components["text_encoder"], t5)


def test_iter_tensors_yields_one_tensor_at_a_time_in_file_order(tmp_path):
    sd = _sample_state_dict(7)
    save_file(sd, tmp_path / "m.safetensors")
    store = open_store(tmp_path / "m.safetensors")
    names = [n for n, _ in store.iter_tensors()]
    assert names == list(store.infos())
