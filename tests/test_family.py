"""`vqtool family` end to end on the tiny Wan pipeline: GGUF and torchao variants from one command,
validated side by side by `vqtool validate` against full precision, and the card built from that report.
"""

from __future__ import annotations

import json
import os

import pytest

pytest.importorskip("torchao")

POLICIES = ["q8_0", "q4_k_m", "int8-weight-only"]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    import torch
    from click.testing import CliRunner

    from reference_infer.tiny import save_pipeline
    from vqtool.cli import cli

    previous = torch.get_num_threads()
    root = tmp_path_factory.mktemp("family-e2e")
    pipe = save_pipeline("wan-t2v", root / "pipe")
    out = root / "out"
    res = CliRunner().invoke(cli, [
        "family", str(pipe), "-o", str(out), "--policies", ",".join(POLICIES), "--name", "tiny",
        "--prompt", "a cat runs", "--frames", "9", "--height", "32", "--width", "48", "--steps", "3",
        "--threads", "1", "--torchao-dtype", "f32", "--base-model", "me/tiny-base", "--license", "apache-2.0",
        "--repo-id", "me/tiny-family", "--json"])
    torch.set_num_threads(previous)
    assert res.exit_code == 0, res.output
    return out, json.loads(res.stdout), pipe


def test_family_outputs_gguf_files_and_a_torchao_folder(family):
    out, result, _ = family
    assert [(o["policy"], o["kind"]) for o in result["outputs"]] == [
        ("q8_0", "gguf"), ("q4_k_m", "gguf"), ("int8-weight-only", "torchao")]
    assert (out / "tiny-q8_0.gguf").is_file() and (out / "tiny-int8-weight-only" / "config.json").is_file()
    assert result["report"] == str(out / "validation" / "report.json")


def test_validate_compares_torchao_and_gguf_variants_side_by_side(family):
    out, _, _ = family
    report = json.loads((out / "validation" / "report.json").read_text())
    cands = {c["name"]: c for c in report["candidates"]}
    assert set(cands) == set(POLICIES)
    psnr = {n: float(c["summary"]["psnr_mean"]) for n, c in cands.items()}
    assert psnr["q8_0"] > psnr["q4_k_m"] > 10
    assert psnr["int8-weight-only"] > 25  # int8 per-row weights: close to full precision
    tao = cands["int8-weight-only"]
    assert tao["weights"]["format"] == "torchao" and tao["weights"]["family"] == "wan"
    # The per-layer weight table covers the torchao variant: quantized Linear weights differ, kept roles do not.
    by_role = tao["weight_errors"]["by_role"]
    assert by_role["ffn.up"]["rel_rmse"] > 0 and by_role["head"]["rel_rmse"] < 1e-6
    for v in tao["videos"]:
        assert os.path.isfile(out / "validation" / v["compare_path"])


def test_card_shows_the_report_metrics_of_every_variant(family):
    from vqtool.publish.reports import format_psnr, format_ssim

    out, _, _ = family
    card = (out / "README.md").read_text()
    report = json.loads((out / "validation" / "report.json").read_text())
    for c in report["candidates"]:
        name = os.path.basename(os.path.normpath(c["weights"]["path"]))
        row = next(line for line in card.splitlines() if line.startswith(f"| `{name}"))
        assert format_psnr(float(c["summary"]["psnr_mean"])) in row
        assert format_ssim(float(c["summary"]["ssim_mean"])) in row
    assert "means over the 1 videos" in card and "[`validation/report.json`](validation/report.json)" in card
    assert 'hf_hub_download("me/tiny-family", "tiny-' in card


def test_dry_run_card_of_the_family_lists_every_file_with_size_and_metrics(family):
    from click.testing import CliRunner

    from vqtool.cli import cli

    out, result, _ = family
    res = CliRunner().invoke(cli, ["upload", str(out), "--repo-id", "me/tiny-family", "--dry-run",
                                   "--base-model", "me/tiny-base", "--license", "apache-2.0"])
    assert res.exit_code == 0, res.output
    for o in result["outputs"]:
        name = os.path.basename(o["path"])
        row = next(line for line in res.output.splitlines() if line.startswith(f"| `{name}"))
        assert " dB |" in row or "identical" in row
    assert "validation/report.html" in res.output and "tiny-int8-weight-only/diffusion_pytorch_model.safetensors" in res.output


def test_family_dry_run_and_refusals(family, tmp_path):
    from click.testing import CliRunner

    from vqtool.cli import cli

    out, _, pipe = family
    res = CliRunner().invoke(cli, ["family", str(pipe), "-o", str(tmp_path / "new"), "--policies",
                                   "q8_0,mixed-q4,int8-dynamic", "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "bpw" in res.output and "(torchao)" in res.output and not (tmp_path / "new").exists()
    before = sorted(os.listdir(out))
    for args in (["--policies", "q8_0", "--name", "tiny"], ["--policies", "q6_k"]):  # an existing GGUF; README.md
        res = CliRunner().invoke(cli, ["family", str(pipe), "-o", str(out), "--no-validate", *args])
        assert res.exit_code == 1 and "--overwrite" in str(res.exception)
    assert sorted(os.listdir(out)) == before
    transformer = pipe / "transformer"
    res = CliRunner().invoke(cli, ["family", str(transformer), "-o", str(tmp_path / "y"), "--policies", "q8_0"])
    assert res.exit_code == 1 and "--pipeline" in str(res.exception) and not (tmp_path / "y").exists()
    res = CliRunner().invoke(cli, ["family", str(pipe), "-o", str(tmp_path / "z"), "--policies", "q8_0,float8-dynamic"])
    assert res.exit_code == 1 and "runs on cuda, not cpu" in str(res.exception) and not (tmp_path / "z").exists()
    res = CliRunner().invoke(cli, ["family", str(pipe), "-o", str(tmp_path / "x"), "--policies", "q8_0,q9_9"])
    assert res.exit_code == 1 and "unknown policy 'q9_9'" in str(res.exception)
