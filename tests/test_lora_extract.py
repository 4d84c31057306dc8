"""LoRA extraction: a tuned model made as base + a known low-rank update (+ small noise) is recovered.

Protects: ``--energy`` picks the planted rank of every layer; the extracted LoRA, loaded with
diffusers' ``load_lora_weights``, reproduces the tuned model's output (Wan and CogVideoX, base
and tuned in different file formats); the ComfyUI and GGUF-adapter files apply by their own
loaders' rules (diffusers' converter for ComfyUI Wan keys, llama.cpp's alpha / r for GGUF);
changed tensors a LoRA cannot carry are reported, never dropped silently.
"""

from __future__ import annotations

import json

import pytest
import torch

from vqtool.errors import InputError, MappingError

NOISE = 1e-5


pytestmark = pytest.mark.usefixtures("one_torch_thread")
RANKS = (2, 4, 6)


def plant(canonical: dict[str, torch.Tensor], seed: int, ranks=RANKS) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """``canonical`` + up @ down on every 2-D ``.weight`` (rank cycling through ``ranks``) + N(0, NOISE) noise."""
    gen = torch.Generator().manual_seed(seed)
    tuned, planted = {}, {}
    linear = [n for n, t in canonical.items() if t.ndim == 2 and n.endswith(".weight")]
    for name, t in canonical.items():
        if name in linear:
            r = ranks[linear.index(name) % len(ranks)]
            up = torch.randn(t.shape[0], r, generator=gen) * 0.02
            down = torch.randn(r, t.shape[1], generator=gen) * 0.02
            t = t + up @ down + torch.randn(t.shape, generator=gen) * NOISE
            planted[name] = r
        tuned[name] = t
    return tuned, planted


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.fixture(scope="module")
def wan_case(tmp_path_factory):
    """Tiny Wan T2V: base as a Diffusers folder, tuned as a ComfyUI single file (upstream names + prefix)."""
    from safetensors.torch import save_file

    from vqtool.testing import wan

    root = tmp_path_factory.mktemp("lora_wan")
    base = wan.build_transformer("t2v", seed=0)
    original = wan.to_format({k: v.detach() for k, v in base.state_dict().items()}, "original")
    tuned_sd, planted = plant(original, seed=1)
    save_file({wan.COMFY_PREFIX + k: v.contiguous() for k, v in tuned_sd.items()}, str(root / "tuned_comfy.safetensors"))
    tuned = wan.build_transformer("t2v", seed=0)
    tuned.load_state_dict(wan.to_format(tuned_sd, "diffusers"), strict=True)
    gen = torch.Generator().manual_seed(5)
    inputs = dict(hidden_states=torch.randn(1, 16, 2, 8, 8, generator=gen), timestep=torch.tensor([500]),
                  encoder_hidden_states=torch.randn(1, 8, 64, generator=gen), return_dict=False)
    return {"root": root, "base": wan.write_transformer(base, root, "diffusers"), "tuned": root / "tuned_comfy.safetensors",
            "tuned_sd": tuned_sd, "planted": planted, "base_model": base, "tuned_model": tuned, "inputs": inputs}


@pytest.fixture(scope="module")
def wan_energy(wan_case):
    from vqtool.lora.extract import extract

    out = wan_case["root"] / "energy.safetensors"
    return extract(wan_case["base"], wan_case["tuned"], out, energy=0.999, dtype="f32", progress=False), out


def _output_with_lora(pipeline_cls, make_model, lora_path, inputs) -> torch.Tensor:
    pipe = pipeline_cls(tokenizer=None, text_encoder=None, vae=None, scheduler=None, transformer=make_model())
    pipe.load_lora_weights(str(lora_path))
    with torch.no_grad():
        return pipe.transformer(**inputs)[0]


def test_energy_picks_the_planted_rank_of_every_layer(wan_energy, wan_case):
    result, _ = wan_energy
    got = {row["name"]: row["rank"] for row in result["layers"]}
    assert got == wan_case["planted"]
    assert len(set(got.values())) == len(RANKS)
    assert all(row["energy"] > 0.999 and row["rel_error"] < 0.05 for row in result["layers"])
    assert result["not_carried"] == [] and result["unchanged"] == []


def test_wan_lora_loaded_by_diffusers_reproduces_the_tuned_model(wan_energy, wan_case):
    from diffusers import WanPipeline

    from vqtool.testing import wan

    _, out = wan_energy
    with torch.no_grad():
        want = wan_case["tuned_model"](**wan_case["inputs"])[0]
        base = wan_case["base_model"](**wan_case["inputs"])[0]
    got = _output_with_lora(WanPipeline, lambda: wan.build_transformer("t2v", seed=0), out, wan_case["inputs"])
    assert _rel(base, want) > 0.005  # the update matters
    assert _rel(got, want) < 0.02 * _rel(base, want)


def test_comfy_format_applies_by_comfyui_rule_and_loads_in_diffusers(wan_case, tmp_path):
    """kohya keys on upstream names: W + up @ down * alpha / rank is the tuned weight; diffusers' Wan converter
    reads the file and gives the same output as the Diffusers-format LoRA of the same layers."""
    from diffusers import WanPipeline
    from safetensors.torch import load_file

    from vqtool.lora.extract import extract
    from vqtool.testing import wan

    comfy, peft = tmp_path / "comfy.safetensors", tmp_path / "peft.safetensors"
    common = dict(rank=6, dtype="f32", include=["blocks.*"], progress=False)
    extract(wan_case["base"], wan_case["tuned"], comfy, fmt="comfy", **common)
    extract(wan_case["base"], wan_case["tuned"], peft, fmt="diffusers", **common)
    sd = load_file(str(comfy))
    base = wan.to_format({k: v.detach() for k, v in wan_case["base_model"].state_dict().items()}, "original")
    name = "blocks.1.cross_attn.o"
    down, up, alpha = (sd[f"diffusion_model.{name}.{s}"] for s in ("lora_down.weight", "lora_up.weight", "alpha"))
    merged = base[f"{name}.weight"] + up @ down * (float(alpha) / down.shape[0])
    assert _rel(merged, wan_case["tuned_sd"][f"{name}.weight"]) < 1e-3
    assert all(k.startswith("diffusion_model.blocks.") for k in sd)
    make = lambda: wan.build_transformer("t2v", seed=0)  # noqa: E731
    a = _output_with_lora(WanPipeline, make, comfy, wan_case["inputs"])
    b = _output_with_lora(WanPipeline, make, peft, wan_case["inputs"])
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_gguf_adapter_follows_llama_cpp_layout(wan_case, tmp_path):
    """general.type = adapter; '<base GGUF tensor>.lora_a' [r, in] / '.lora_b' [out, r] (torch order);
    W + lora_b @ lora_a * alpha / r (llama.cpp's rule, one alpha per file) is the tuned weight."""
    import gguf

    from vqtool.lora.extract import extract
    from vqtool.quant.run import quantize_model
    from vqtool.testing import wan

    out = tmp_path / "adapter.gguf"
    extract(wan_case["base"], wan_case["tuned"], out, energy=0.999, fmt="gguf", dtype="f32", progress=False)
    reader = gguf.GGUFReader(str(out))
    field = lambda k: reader.fields[k].contents()  # noqa: E731
    assert field("general.type") == "adapter" and field("adapter.type") == "lora"
    assert field("general.architecture") == "wan"
    alpha = field("adapter.lora.alpha")
    tensors = {t.name: torch.from_numpy(t.data.copy()).reshape([int(d) for d in reversed(t.shape)]) for t in reader.tensors}
    base_gguf = tmp_path / "base.gguf"
    quantize_model(str(wan_case["base"]), [("q8_0", str(base_gguf))], hash_sources=False, progress=False)
    base_names = {t.name for t in gguf.GGUFReader(str(base_gguf)).tensors}
    adapted = {n.rsplit(".", 1)[0] for n in tensors}
    assert adapted == set(wan_case["planted"]) and adapted <= base_names
    base = wan.to_format({k: v.detach() for k, v in wan_case["base_model"].state_dict().items()}, "original")
    for name in ("blocks.0.self_attn.q.weight", "blocks.1.ffn.2.weight", "head.head.weight"):
        a, b = tensors[f"{name}.lora_a"], tensors[f"{name}.lora_b"]
        assert a.shape[1] == base[name].shape[1] and b.shape[0] == base[name].shape[0] and a.shape[0] == b.shape[1]
        merged = base[name] + b @ a * (alpha / a.shape[0])
        assert _rel(merged, wan_case["tuned_sd"][name]) < 1e-3


@pytest.fixture(scope="module")
def cog_case(tmp_path_factory):
    """Tiny CogVideoX 5B: base as a Diffusers folder, tuned as a SAT folder (fused QKV) with rank-4 updates."""
    from vqtool.mapping import iter_converted, plan_conversion
    from vqtool.sat import write_transformer
    from vqtool.testing import DictStore
    from vqtool.testing.cogvideox import build_transformer, save_diffusers, transformer_inputs

    root = tmp_path_factory.mktemp("lora_cog")
    base = build_transformer("5b", seed=0)
    sd = {k: v.detach() for k, v in base.state_dict().items()}
    tuned_sd, planted = plant(sd, seed=2, ranks=(4,))
    store = DictStore(tuned_sd, config=dict(base.config))
    write_transformer(root / "tuned_sat", ((n, t.clone()) for n, t in iter_converted(store, plan_conversion(store, "sat"))))
    tuned = build_transformer("5b", seed=0)
    tuned.load_state_dict(tuned_sd, strict=True)
    return {"root": root, "base": save_diffusers(base, root / "base"), "tuned": root / "tuned_sat", "planted": planted,
            "base_model": base, "tuned_model": tuned, "inputs": transformer_inputs(base)}


def test_cogvideox_lora_at_the_planted_rank_reproduces_the_tuned_model(cog_case):
    from diffusers import CogVideoXPipeline

    from vqtool.lora.extract import extract
    from vqtool.testing.cogvideox import build_transformer

    out = cog_case["root"] / "lora.safetensors"
    result = extract(cog_case["base"], cog_case["tuned"], out, rank=4, progress=False)  # bf16 factors
    assert {r["name"] for r in result["layers"]} == set(cog_case["planted"])
    assert min(r["energy"] for r in result["layers"]) > 0.999
    with torch.no_grad():
        want = cog_case["tuned_model"](**cog_case["inputs"])[0]
        base = cog_case["base_model"](**cog_case["inputs"])[0]
    got = _output_with_lora(CogVideoXPipeline, lambda: build_transformer("5b", seed=0), out, cog_case["inputs"])
    assert _rel(base, want) > 0.005
    assert _rel(got, want) < 0.05 * _rel(base, want)


def test_cogvideox_energy_rule_picks_the_planted_rank_through_the_fused_sat_qkv(cog_case, tmp_path):
    from vqtool.lora.extract import extract

    result = extract(cog_case["base"], cog_case["tuned"], tmp_path / "e.safetensors", energy=0.999, progress=False)
    assert {r["name"]: r["rank"] for r in result["layers"]} == cog_case["planted"]


def test_changed_tensors_a_lora_cannot_carry_are_reported(wan_case, tmp_path):
    from safetensors.torch import save_file

    from vqtool.lora.extract import extract
    from vqtool.testing import wan

    sd = dict(wan_case["tuned_sd"])
    sd["head.head.bias"] = sd["head.head.bias"] + 0.1
    sd["blocks.0.norm3.weight"] = sd["blocks.0.norm3.weight"] * 1.5
    path = tmp_path / "tuned_bias.safetensors"
    save_file({wan.COMFY_PREFIX + k: v.contiguous() for k, v in sd.items()}, str(path))
    result = extract(wan_case["base"], path, tmp_path / "l.safetensors", rank=2, include=["blocks.0.*"], progress=False)
    reasons = {r["name"]: r["reason"] for r in result["not_carried"]}
    assert reasons["head.head.bias"] == "not a Linear weight"
    assert reasons["blocks.0.norm3.weight"] == "not a Linear weight"
    assert reasons["blocks.1.ffn.0.weight"] == "excluded by --include/--exclude"
    assert "head.head.weight" in reasons


def test_unchanged_layers_and_min_diff_are_left_out(wan_case, tmp_path):
    from vqtool.lora.extract import extract

    with pytest.raises(InputError, match="no LoRA layers"):
        extract(wan_case["base"], wan_case["base"], tmp_path / "same.safetensors", rank=4, progress=False)
    result = extract(wan_case["base"], wan_case["tuned"], tmp_path / "big.safetensors", rank=4, min_diff=0.015,
                     progress=False)
    assert result["unchanged"] and all(r["rel_diff"] > 0.015 for r in result["layers"])
    assert len(result["unchanged"]) + len(result["layers"]) == len(wan_case["planted"])


def test_clamp_quantile_bounds_the_factors(wan_case, tmp_path):
    from safetensors.torch import load_file

    from vqtool.lora.extract import extract

    out = tmp_path / "clamped.safetensors"
    result = extract(wan_case["base"], wan_case["tuned"], out, rank=6, clamp_quantile=0.9, dtype="f32", progress=False)
    sd = load_file(str(out))
    row = next(r for r in result["layers"] if r["name"] == "blocks.0.ffn.0.weight")
    up = sd["transformer.blocks.0.ffn.net.0.proj.lora_B.weight"]
    down = sd["transformer.blocks.0.ffn.net.0.proj.lora_A.weight"]
    assert max(up.abs().max(), down.abs().max()) <= row["clamp"] + 1e-7
    assert row["rel_error"] > 0.05  # clipping 10 % of the entries costs accuracy, and the report says so


def test_models_of_different_architectures_are_refused(wan_case, cog_case, tmp_path):
    from vqtool.lora.extract import extract

    with pytest.raises(MappingError, match="base is wan but the tuned model is cogvideox"):
        extract(wan_case["base"], cog_case["tuned"], tmp_path / "x.safetensors", rank=2, progress=False)


def test_rank_rule_validation():
    from vqtool.lora.factors import RankRule

    for kwargs in ({}, {"rank": 2, "energy": 0.9}, {"rank": 0}, {"energy": 1.5}, {"ratio": 1.0}):
        with pytest.raises(InputError):
            RankRule(**kwargs)


def test_ratio_and_energy_rules_on_a_known_spectrum():
    from vqtool.lora.factors import RankRule, low_rank

    u, _ = torch.linalg.qr(torch.randn(64, 64, generator=torch.Generator().manual_seed(0)))
    s = torch.tensor([8.0, 4.0, 2.0, 1.0] + [0.0] * 60)
    delta = u * s @ u.T
    assert low_rank(delta, RankRule(ratio=0.2)).rank == 3  # 8, 4, 2 > 1.6
    # squared: 64, 16, 4, 1 of 85 -> cumulative 0.753, 0.941, 0.988, 1.0
    assert low_rank(delta, RankRule(energy=0.9)).rank == 2
    assert low_rank(delta, RankRule(energy=0.95)).rank == 3
    assert low_rank(delta, RankRule(energy=0.99)).rank == 4
    assert low_rank(delta, RankRule(energy=0.5, max_rank=1)).rank == 1


def test_dry_run_lists_layers_and_cli_writes_a_report(wan_case, tmp_path):
    from click.testing import CliRunner

    from vqtool.cli import cli

    runner = CliRunner()
    dry = runner.invoke(cli, ["lora", "extract", "--base", str(wan_case["base"]), "--tuned", str(wan_case["tuned"]),
                              "--rank", "2", "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert len(json.loads(dry.output)["layers"]) == len(wan_case["planted"])
    out = tmp_path / "cli.safetensors"
    res = runner.invoke(cli, ["lora", "extract", "--base", str(wan_case["base"]), "--tuned", str(wan_case["tuned"]),
                              "--energy", "0.999", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "blocks.0.self_attn.q.weight" in res.output and "by role" in res.output and out.exists()


def test_output_is_checked_before_any_svd(wan_case, tmp_path, monkeypatch):
    from vqtool.errors import OutputExistsError
    from vqtool.lora import extract as extract_module

    monkeypatch.setattr(extract_module, "low_rank", lambda *a, **k: pytest.fail("factored before checking the output"))
    with pytest.raises(InputError, match="gguf LoRA is written as a .gguf file"):
        extract_module.extract(wan_case["base"], wan_case["tuned"], tmp_path / "x.safetensors", rank=2, fmt="gguf")
    (tmp_path / "exists.safetensors").write_bytes(b"")
    with pytest.raises(OutputExistsError):
        extract_module.extract(wan_case["base"], wan_case["tuned"], tmp_path / "exists.safetensors", rank=2)
