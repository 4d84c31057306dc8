"""``vqtool convert`` end to end on files: every Wan input layout, Diffusers loading, atomic output."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from vqtool.cli import cli
from vqtool.testing.wan import build_transformer, write_transformer


@pytest.fixture(scope="module")
def t2v(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan_t2v")
    model = build_transformer("t2v", seed=3)
    paths = {fmt: write_transformer(model, root, fmt) for fmt in ("diffusers", "original", "original-sharded", "comfy")}
    return model, paths


def _run(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.output


def _load(cls, folder):
    """from_pretrained, then copy every tensor out of the file map: mmap'd tensors can sit at
    unaligned addresses, which changes CPU kernel paths (1-ulp differences unrelated to mapping)."""
    model = cls.from_pretrained(folder).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
    return model


def _forward(model):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 2, 8, 8, generator=gen)
    ctx = torch.randn(1, 6, model.config.text_dim, generator=gen)
    with torch.no_grad():
        return model(hidden_states=x, timestep=torch.tensor([10]), encoder_hidden_states=ctx, return_dict=False)[0]


@pytest.mark.parametrize("fmt", ["original", "original-sharded", "comfy", "diffusers"])
def test_every_layout_converts_to_a_loadable_diffusers_folder(t2v, fmt, tmp_path):
    from diffusers import WanTransformer3DModel

    model, paths = t2v
    code, out = _run("convert", paths[fmt], "-o", tmp_path / "out", "--to", "diffusers", "--no-progress")
    assert code == 0, out
    loaded = _load(WanTransformer3DModel, tmp_path / "out")
    assert torch.equal(_forward(loaded), _forward(model))


def test_comfy_file_round_trips_bit_identically_with_its_prefix(t2v, tmp_path):
    from safetensors.torch import load_file

    _, paths = t2v
    assert _run("convert", paths["comfy"], "-o", tmp_path / "d", "--to", "diffusers", "--no-progress")[0] == 0
    code, out = _run("convert", tmp_path / "d", "-o", tmp_path / "back.safetensors", "--to", "original",
                     "--prefix", "model.diffusion_model.", "--no-progress")
    assert code == 0, out
    a, b = load_file(paths["comfy"]), load_file(tmp_path / "back.safetensors")
    assert list(a) and set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype for k in a)


def test_small_shard_size_writes_an_index_diffusers_can_load(t2v, tmp_path):
    from diffusers import WanTransformer3DModel

    model, paths = t2v
    code, out = _run("convert", paths["original"], "-o", tmp_path / "s", "--to", "diffusers",
                     "--max-shard-size", "1MB", "--no-progress")
    assert code == 0, out
    index = json.loads((tmp_path / "s" / "diffusion_pytorch_model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    loaded = _load(WanTransformer3DModel, tmp_path / "s")
    assert torch.equal(_forward(loaded), _forward(model))


def test_dry_run_json_shows_the_plan_and_writes_nothing(t2v, tmp_path):
    _, paths = t2v
    code, out = _run("convert", paths["original"], "-o", tmp_path / "x", "--to", "diffusers", "--dry-run", "--json")
    assert code == 0
    result = json.loads(out)
    (comp,) = result["components"]
    assert comp["family"] == "wan" and comp["variant"] == "t2v-custom" and comp["from"] == "original"
    assert "blocks.0.attn1.to_q.weight" in {t["name"] for t in comp["plan"]}
    assert not (tmp_path / "x").exists()


def test_existing_output_needs_overwrite(t2v, tmp_path):
    from vqtool.cli import main

    _, paths = t2v
    assert _run("convert", paths["original"], "-o", tmp_path / "o", "--to", "diffusers", "--no-progress")[0] == 0
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(paths["original"]), "-o", str(tmp_path / "o"), "--to", "diffusers", "--no-progress"])
    assert exc.value.code != 0
    assert _run("convert", paths["original"], "-o", tmp_path / "o", "--to", "diffusers", "--overwrite",
                "--no-progress")[0] == 0


def test_stray_key_in_a_file_is_reported_by_name(tmp_path):
    from safetensors.torch import load_file, save_file

    from vqtool.errors import MappingError
    from vqtool.mapping.convert import convert

    model = build_transformer("t2v", seed=4)
    path = write_transformer(model, tmp_path, "original")
    sd = load_file(path)
    sd["blocks.0.extra_adapter.weight"] = torch.zeros(2)
    del sd["head.head.bias"]
    save_file(sd, tmp_path / "bad.safetensors")
    with pytest.raises(MappingError, match=r"blocks\.0\.extra_adapter\.weight.*head\.head\.bias"):
        convert(tmp_path / "bad.safetensors", tmp_path / "out", to="diffusers", progress=False)
    assert not (tmp_path / "out").exists()
