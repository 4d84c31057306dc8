"""sat2hf / hf2sat on tiny CogVideoX models of every variant, the VAE and the T5.

Protects: SAT -> Diffusers -> SAT and Diffusers -> SAT -> Diffusers are bit-identical (dropped
buffers aside, as documented), the converted Diffusers models load strict and compute exactly
what the directly built model computes, the pipeline folder loads offline, detection reports
every variant in both formats, and bad inputs fail with errors that list the keys.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vqtool.errors import MappingError, OutputExistsError
from vqtool.sat import COMPONENT_PREFIXES, TRANSFORMER_FILE
from vqtool.sat_convert import diffusers_to_sat, sat_to_diffusers
from vqtool.testing import cogvideox as tc

PREFIX = COMPONENT_PREFIXES["transformer"]
DROPPED = ("mixins.pos_embed.freqs_sin", "mixins.pos_embed.freqs_cos", "transformer.position_embeddings.weight")


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """Builds each (kind, variant) folder once per session: 'sat', 'hf' (sat2hf of it), 'pipe', 'ft'."""
    root = tmp_path_factory.mktemp("cogvideox")
    cache: dict[tuple[str, str], Path] = {}

    def get(kind: str, variant: str) -> Path:
        key = (kind, variant)
        if key not in cache:
            path = root / f"{kind}-{variant}"
            if kind == "sat":
                tc.save_sat(variant, path, pipeline_dir=get("pipe", variant))
            elif kind == "ft":
                tc.save_sat(variant, path, full_finetune=True, pipeline_dir=get("pipe", variant))
            elif kind == "pipe":
                tc.save_pipeline(variant, path)
            elif kind == "hf":
                sat_to_diffusers(get("sat", variant), path, config=tc.TINY_SAMPLE_CONFIG, progress=False)
            cache[key] = path
        return cache[key]

    return get


def _sat_transformer(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "transformer" / "1" / TRANSFORMER_FILE, map_location="cpu", weights_only=True)["module"]


def _strict_load(cls, folder: Path):
    model = cls.from_config(cls.load_config(folder))
    weights = {}
    for f in sorted(folder.glob("*.safetensors")):
        weights.update(load_file(f))
    model.load_state_dict(weights, strict=True)
    return model.eval()


@pytest.mark.parametrize("variant", tc.VARIANTS)
def test_sat2hf_transformer_loads_strict_and_matches_the_directly_built_forward(built, variant):
    from diffusers import CogVideoXTransformer3DModel

    folder = built("hf", variant) / "transformer"
    reference = tc.build_transformer(variant)
    converted = _strict_load(CogVideoXTransformer3DModel, folder)
    inputs = tc.transformer_inputs(reference)
    with torch.no_grad():
        want = reference(**inputs)[0]
        assert torch.equal(converted(**inputs)[0], want)
        # from_pretrained loads too (its memory-mapped weights may take other kernels: last-bit differences).
        loaded = CogVideoXTransformer3DModel.from_pretrained(folder).eval()
        torch.testing.assert_close(loaded(**inputs)[0], want, rtol=1e-5, atol=1e-5)


def test_sat2hf_vae_loads_strict_and_matches_the_directly_built_forward(built):
    from diffusers import AutoencoderKLCogVideoX

    converted = _strict_load(AutoencoderKLCogVideoX, built("hf", "2b") / "vae")
    reference = tc.build_vae(1)
    x = tc.vae_input()
    with torch.no_grad():
        z = reference.encode(x).latent_dist.mode()
        assert torch.equal(converted.encode(x).latent_dist.mode(), z)
        assert torch.equal(converted.decode(z).sample, reference.decode(z).sample)


@pytest.mark.parametrize("variant,scaling,invert", [("2b", 1.15258426, False), ("5b", 0.7, False), ("1.5", 0.7, True)])
def test_sat2hf_vae_config_follows_the_transformer_variant(built, variant, scaling, invert):
    config = json.loads((built("hf", variant) / "vae" / "config.json").read_text())
    assert config["scaling_factor"] == scaling and config["invert_scale_latents"] is invert


@pytest.mark.parametrize("variant", tc.VARIANTS)
def test_sat_to_diffusers_to_sat_is_bit_identical(built, variant, tmp_path):
    src = built("sat", variant)
    diffusers_to_sat(built("hf", variant), tmp_path / "back", progress=False)
    before, after = _sat_transformer(src), _sat_transformer(tmp_path / "back")
    kept = {k for k in before if k.removeprefix(PREFIX) not in DROPPED}
    assert kept <= set(after)
    for key in kept:
        assert after[key].dtype == before[key].dtype and torch.equal(after[key], before[key]), key
    # Documented: freqs_* omitted (SAT recomputes them), the unused rotary leftover written as zeros.
    extra = set(after) - kept
    assert all(k.removeprefix(PREFIX) == "transformer.position_embeddings.weight" for k in extra)
    for key in extra:
        assert not after[key].any() and after[key].shape == before[key].shape
    vae_before = torch.load(src / "vae" / "3d-vae.pt", weights_only=True)["state_dict"]
    vae_after = torch.load(tmp_path / "back" / "vae" / "3d-vae.pt", weights_only=True)["state_dict"]
    assert set(vae_after) == {k for k in vae_before if not k.startswith("loss.")}
    assert all(torch.equal(vae_after[k], vae_before[k]) for k in vae_after)
    t5_before = load_file(src / "t5-v1_1-xxl" / "model.safetensors")
    t5_after = load_file(tmp_path / "back" / "t5-v1_1-xxl" / "model.safetensors")
    assert t5_before.keys() == t5_after.keys() and all(torch.equal(t5_after[k], t5_before[k]) for k in t5_before)


@pytest.mark.parametrize("variant", tc.VARIANTS)
def test_diffusers_to_sat_to_diffusers_is_bit_identical(built, variant, tmp_path):
    pipe = built("pipe", variant)
    diffusers_to_sat(pipe, tmp_path / "sat", progress=False)
    sat_to_diffusers(tmp_path / "sat", tmp_path / "hf", config=tc.TINY_SAMPLE_CONFIG, progress=False)
    for component in ("transformer", "vae", "text_encoder"):
        name = "model.safetensors" if component == "text_encoder" else "diffusion_pytorch_model.safetensors"
        before, after = load_file(pipe / component / name), load_file(tmp_path / "hf" / component / name)
        assert before.keys() == after.keys(), component
        for key in before:
            assert after[key].dtype == before[key].dtype and torch.equal(after[key], before[key]), key
    config_before = json.loads((pipe / "transformer" / "config.json").read_text())
    config_after = json.loads((tmp_path / "hf" / "transformer" / "config.json").read_text())
    assert {k: config_before[k] for k in config_after if not k.startswith("_")} == {
        k: v for k, v in config_after.items() if not k.startswith("_")}


@pytest.mark.parametrize("variant", ["2b", "5b-i2v", "1.5-i2v"])
def test_sat2hf_with_t5_and_tokenizer_writes_a_pipeline_diffusers_loads_offline(built, variant):
    from diffusers import DiffusionPipeline

    folder = built("hf", variant)
    pipe = DiffusionPipeline.from_pretrained(folder)
    i2v = variant in ("5b-i2v", "1.5-i2v")
    assert type(pipe).__name__ == ("CogVideoXImageToVideoPipeline" if i2v else "CogVideoXPipeline")
    sched = pipe.scheduler.config
    assert type(pipe.scheduler).__name__ == "CogVideoXDDIMScheduler"
    assert (sched.prediction_type, sched.rescale_betas_zero_snr, sched.timestep_spacing) == ("v_prediction", True, "trailing")
    assert sched.snr_shift_scale == (3.0 if variant == "2b" else 1.0)
    ids = pipe.tokenizer(["a cat runs"], return_tensors="pt").input_ids
    reference = tc.build_t5(2)
    with torch.no_grad():
        assert torch.equal(pipe.text_encoder(ids).last_hidden_state, reference(ids).last_hidden_state)


def test_full_finetune_checkpoint_splits_t5_and_vae_by_prefix(built, tmp_path):
    folder = built("ft", "5b")
    keys = _sat_transformer(folder)
    assert any(k.startswith("conditioner.embedders.0.transformer.") for k in keys)
    report = sat_to_diffusers(folder, tmp_path / "hf", config=tc.TINY_SAMPLE_CONFIG, progress=False)
    assert set(report["components"]) == {"transformer", "vae", "text_encoder"}
    written = load_file(tmp_path / "hf" / "transformer" / "diffusion_pytorch_model.safetensors")
    assert written.keys() == tc.build_transformer("5b").state_dict().keys()
    t5 = load_file(tmp_path / "hf" / "text_encoder" / "model.safetensors")
    reference = tc.build_t5(2).state_dict()
    assert all(torch.equal(t5[k], reference[k]) for k in t5) and "shared.weight" in t5
    assert report["components"]["text_encoder"]["ignored"][0]["name"] == "encoder.embed_tokens.weight"
    from transformers import T5EncoderModel  # the config.json derived from shapes loads and computes the same

    ids = torch.tensor([[5, 6, 7, 1]])
    with torch.no_grad():
        got = T5EncoderModel.from_pretrained(tmp_path / "hf" / "text_encoder").eval()(ids).last_hidden_state
        assert torch.equal(got, tc.build_t5(2)(ids).last_hidden_state)


def test_conditioner_keys_never_become_transformer_keys():
    # CogVideo issue #633: slicing len("model.diffusion_model.") == len("conditioner.embedders.") characters
    # turns "conditioner.embedders.0.transformer.*" into "0.transformer*" transformer keys.
    from vqtool.sat import split_components
    from vqtool.testing.cogvideox import MetaStore

    shapes = {PREFIX + "time_embed.0.weight": (512, 256),
              "conditioner.embedders.0.transformer.encoder.block.0.layer.0.SelfAttention.q.weight": (64, 64)}
    views = split_components(MetaStore(shapes))
    assert list(views["transformer"].infos()) == ["time_embed.0.weight"]
    assert list(views["text_encoder"].infos()) == ["encoder.block.0.layer.0.SelfAttention.q.weight"]
    sliced = "conditioner.embedders.transformer.layers.0.attention.dense.weight"  # 22 chars + a transformer key
    with pytest.raises(MappingError, match="conditioner.embedders.transformer.layers.0"):
        split_components(MetaStore({**shapes, sliced: (256, 256)}))


def test_unknown_and_missing_keys_are_listed(built, tmp_path):
    import shutil

    folder = shutil.copytree(built("sat", "2b"), tmp_path / "sat")
    path = folder / "transformer" / "1" / TRANSFORMER_FILE
    state = torch.load(path, weights_only=True)
    state["module"][PREFIX + "mixins.lora.stray.weight"] = torch.zeros(2)
    del state["module"][PREFIX + "transformer.layers.1.attention.dense.weight"]
    torch.save(state, path)
    with pytest.raises(MappingError) as err:
        sat_to_diffusers(folder, tmp_path / "out", dry_run=True)
    assert "mixins.lora.stray.weight" in str(err.value)
    assert "transformer_blocks.1.attn1.to_out.0.weight" in str(err.value)


def test_learned_position_table_of_another_size_asks_for_the_sample_size(built, tmp_path):
    with pytest.raises(MappingError, match="--config sample_height"):
        sat_to_diffusers(built("sat", "5b-i2v"), tmp_path / "out", dry_run=True)


@pytest.mark.parametrize("variant", tc.VARIANTS)
def test_detection_reports_variant_and_config_in_both_formats(built, variant):
    from vqtool.io import open_checkpoint
    from vqtool.mapping import identify
    from vqtool.sat import open_sat

    cfg = tc.TINY_TRANSFORMER[variant]
    stores = {"sat": open_sat(built("sat", variant)), "diffusers": open_checkpoint(built("pipe", variant)).components}
    for fmt, comps in stores.items():
        graph = identify(comps["transformer"]).graph
        assert (graph.family, graph.component, graph.variant) == ("cogvideox", "transformer", variant), fmt
        assert graph.config["num_layers"] == cfg["num_layers"]
        assert graph.config["num_attention_heads"] == cfg["num_attention_heads"]
        assert graph.config["in_channels"] == cfg["in_channels"]
        assert graph.config["use_rotary_positional_embeddings"] == cfg.get("use_rotary_positional_embeddings", False)
        assert graph.config["patch_size_t"] == cfg.get("patch_size_t")
        vae = identify(comps["vae"]).graph
        assert (vae.family, vae.component, vae.config["block_out_channels"]) == ("cogvideox", "vae", [32, 32, 64, 64])
        t5 = identify(comps["text_encoder"]).graph
        assert (t5.family, t5.variant, t5.config["num_layers"], t5.config["d_model"]) == ("t5", "t5-v1_1", 2, 32)


def test_roles_cover_every_transformer_tensor(built):
    from vqtool.mapping import identify
    from vqtool.sat import open_sat

    graph = identify(open_sat(built("sat", "1.5-i2v"))["transformer"]).graph
    assert len(graph) == len(tc.build_transformer("1.5-i2v").state_dict())
    roles = {t.name: t.role.value for t in graph}
    assert roles["transformer_blocks.1.attn1.to_k.weight"] == "attn.self.k"
    assert roles["transformer_blocks.0.norm2.linear.weight"] == "modulation"
    assert roles["ofs_embedding.linear_2.weight"] == "embed.ofs"
    assert graph.blocks() == [0, 1]


def test_sat2hf_cli_dry_run_json_and_refusal_to_overwrite(built, tmp_path):
    from click.testing import CliRunner

    from vqtool.cli import cli

    runner = CliRunner()
    args = ["sat2hf", str(built("sat", "5b")), "-o", str(tmp_path / "out")]
    result = runner.invoke(cli, args + ["--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["variant"] == "5b" and report["pipeline"] == "CogVideoXPipeline"
    assert {i["name"].removeprefix(PREFIX) for i in report["components"]["transformer"]["ignored"]} == set(DROPPED)
    assert {i["name"] for i in report["components"]["vae"]["ignored"]} == {
        "loss.discriminator.main.0.weight", "loss.perceptual_loss.scaling_layer.shift"}
    assert not (tmp_path / "out").exists()
    assert runner.invoke(cli, args + ["--config", "sample_height=8"]).exit_code == 0
    again = runner.invoke(cli, args, standalone_mode=False)
    assert isinstance(again.exception, OutputExistsError)
    assert runner.invoke(cli, args + ["--overwrite"]).exit_code == 0


def test_hf2sat_cli_writes_the_sat_layout(built, tmp_path):
    from click.testing import CliRunner

    from vqtool.cli import cli

    out = tmp_path / "sat"
    result = CliRunner().invoke(cli, ["hf2sat", str(built("pipe", "1.5")), "-o", str(out), "--iteration", "1000"])
    assert result.exit_code == 0, result.output
    assert (out / "transformer" / "latest").read_text().strip() == "1000"
    state = torch.load(out / "transformer" / "1000" / TRANSFORMER_FILE, weights_only=True)
    assert list(state) == ["module"] and all(k.startswith(PREFIX) for k in state["module"])
    assert list(torch.load(out / "vae" / "3d-vae.pt", weights_only=True)) == ["state_dict"]
    assert (out / "t5-v1_1-xxl" / "config.json").is_file() and (out / "t5-v1_1-xxl" / "tokenizer.json").is_file()


def test_a_misspelt_config_override_is_refused(built, tmp_path):
    from vqtool.errors import InputError

    with pytest.raises(InputError, match="sample_heigth"):
        sat_to_diffusers(built("sat", "2b"), tmp_path / "out", config={"sample_heigth": 8}, dry_run=True)


def test_component_folders_convert_one_by_one_and_t5_tokenizer_can_be_given(built, tmp_path):
    from diffusers import DiffusionPipeline

    pipe = built("pipe", "1.5")
    diffusers_to_sat(pipe / "transformer", tmp_path / "sat", progress=False)
    diffusers_to_sat(pipe / "vae", tmp_path / "sat", progress=False)
    assert sorted(p.name for p in (tmp_path / "sat").iterdir()) == ["transformer", "vae"]
    report = sat_to_diffusers(tmp_path / "sat", tmp_path / "hf", t5=pipe / "text_encoder", tokenizer=pipe / "tokenizer",
                              config=tc.TINY_SAMPLE_CONFIG, progress=False)
    assert report["pipeline"] == "CogVideoXPipeline"
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "hf")
    assert loaded.vae.config.invert_scale_latents is True and loaded.transformer.config.patch_size_t == 2


def test_hf2sat_reads_the_components_only_folder_sat2hf_writes_without_t5(built, tmp_path):
    pipe = built("pipe", "5b")
    diffusers_to_sat(pipe / "transformer", tmp_path / "sat", progress=False)
    report = sat_to_diffusers(tmp_path / "sat", tmp_path / "hf", config=tc.TINY_SAMPLE_CONFIG, progress=False)
    assert report["pipeline"] is None and sorted(p.name for p in (tmp_path / "hf").iterdir()) == ["transformer"]
    back = diffusers_to_sat(tmp_path / "hf", tmp_path / "back", progress=False)
    assert back["variant"] == "5b"
    a, b = _sat_transformer(tmp_path / "sat"), _sat_transformer(tmp_path / "back")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_hf2sat_refuses_an_existing_sat_folder_before_writing(built, tmp_path):
    pipe = built("pipe", "2b")
    diffusers_to_sat(pipe / "vae", tmp_path / "sat", progress=False)
    before = (tmp_path / "sat" / "vae" / "3d-vae.pt").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="3d-vae.pt"):
        diffusers_to_sat(pipe, tmp_path / "sat", progress=False)
    assert not (tmp_path / "sat" / "transformer").exists()
    assert (tmp_path / "sat" / "vae" / "3d-vae.pt").stat().st_mtime_ns == before
