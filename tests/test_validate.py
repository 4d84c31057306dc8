"""`vqtool validate` end to end on the tiny Wan T2V pipeline: videos, exactness, ordering by bits, reports.

One module-scoped run: a tiny pipeline whose transformer is stored in F16, quantized with f16,
q8_0, q4_k_m and q2_k in one pass, validated against the F16 reference on two prompts.
"""

from __future__ import annotations

import json
import math
import os

import pytest

from reference_infer.tasks import Settings

SETTINGS = Settings(frames=5, height=32, width=48, steps=3)
POLICIES = ("f16", "q8_0", "q4_k_m", "q2_k")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _build(root) -> None:
    import torch

    from reference_infer.tiny import save_pipeline
    from vqtool.quant.run import quantize_model
    from vqtool.validate.run import validate

    pipe = save_pipeline("wan-t2v", root / "pipe", transformer_dtype=torch.float16)
    quantize_model(str(pipe), [(p, str(root / f"{p}.gguf")) for p in POLICIES], progress=False)
    validate(str(pipe), [str(root / f"{p}.gguf") for p in POLICIES], str(root / "val"),
             prompts=["a cat runs", "the dog"], seeds=[0], settings=SETTINGS, threads=1, progress=False)


@pytest.fixture(scope="module")
def run(tmp_path_factory, one_torch_thread):
    """The validation run, made once per test session even when xdist spreads this module over workers."""
    from filelock import FileLock

    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.getbasetemp().parent / "validate-run"  # this session's, shared by its workers
    else:
        root = tmp_path_factory.mktemp("validate-run")
    root.mkdir(exist_ok=True)
    with FileLock(str(root) + ".lock"):
        if not (root / "done").exists():
            _build(root)
            (root / "done").write_text("ok")
    report = json.loads((root / "val" / "report.json").read_text())
    return {"root": root, "pipe": root / "pipe", "out": root / "val", "report": report,
            "ggufs": {p: str(root / f"{p}.gguf") for p in POLICIES}}


def _cand(report, name):
    return next(c for c in report["candidates"] if c["name"] == name)


def test_every_video_decodes_with_pyav_at_the_requested_frames_and_size(run):
    from vqtool.validate.video import read_video

    report, out = run["report"], run["out"]
    paths = [v["path"] for v in report["reference"]["videos"]]
    for c in report["candidates"]:
        paths += [v["path"] for v in c["videos"]]
    assert len(paths) == 2 * (1 + len(POLICIES))
    for rel in paths:
        frames = read_video(str(out / rel))
        assert frames.shape == (SETTINGS.frames, SETTINGS.height, SETTINGS.width, 3), rel
    compare = read_video(str(out / _cand(report, "q8_0")["videos"][0]["compare_path"]))
    assert compare.shape[:3] == (SETTINGS.frames, SETTINGS.height, 3 * SETTINGS.width + 4)


def test_f16_gguf_of_an_f16_model_reproduces_the_reference_exactly(run):
    c = _cand(run["report"], "f16")
    for v in c["videos"]:
        assert v["psnr"] == "inf" and v["max_abs_diff"] == 0.0 and v["ssim"] == 1.0
        assert all(e == 0.0 for e in v["latent_rel_err_per_step"])
        assert v["flicker_delta"] == 0.0
    assert c["summary"]["psnr_mean"] == "inf"
    assert c["weight_errors"]["overall"]["rel_rmse"] == 0.0


def test_psnr_and_ssim_are_ordered_by_bits(run):
    s = {name: _cand(run["report"], name)["summary"] for name in POLICIES}
    assert s["q8_0"]["psnr_mean"] > s["q4_k_m"]["psnr_mean"] > s["q2_k"]["psnr_mean"] > 15
    assert s["q8_0"]["ssim_mean"] >= s["q4_k_m"]["ssim_mean"] > s["q2_k"]["ssim_mean"]
    assert s["q8_0"]["latent_rel_err_final_mean"] < s["q4_k_m"]["latent_rel_err_final_mean"] \
        < s["q2_k"]["latent_rel_err_final_mean"]
    assert s["q8_0"]["weight_rel_rmse"] < s["q4_k_m"]["weight_rel_rmse"] < s["q2_k"]["weight_rel_rmse"]


def test_latent_error_is_recorded_for_every_step_and_per_frame_metrics_for_every_frame(run):
    v = _cand(run["report"], "q4_k_m")["videos"][0]
    assert len(v["latent_rel_err_per_step"]) == SETTINGS.steps
    assert len(v["psnr_per_frame"]) == len(v["ssim_per_frame"]) == SETTINGS.frames
    assert len(v["flicker_per_frame"]) == SETTINGS.frames - 1
    assert all(0 < e < 1 for e in v["latent_rel_err_per_step"])


def test_weight_table_covers_every_tensor_by_role_and_block(run):
    from vqtool.io import open_store
    from vqtool.mapping import build_graph

    with open_store(str(run["pipe"])) as store:
        graph = build_graph(store)
    w = _cand(run["report"], "q4_k_m")["weight_errors"]
    assert {t["name"] for t in w["tensors"]} == {t.name for t in graph.tensors}
    assert set(w["by_block"]) == {f"main.{b}" for b in graph.blocks()}
    assert "ffn.up" in w["by_role"] and "Q4_K" in w["by_role"]["ffn.up"]["types"]
    norms = [t for t in w["tensors"] if t["role"] == "norm"]
    assert norms and all(t["rel_rmse"] == 0.0 for t in norms)  # kept in float by every policy


def test_report_json_is_strict_json_with_settings_and_versions(run):
    text = (run["out"] / "report.json").read_text()
    data = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert data["report_version"] == 1
    s = data["settings"]
    assert (s["frames"], s["height"], s["width"], s["steps"]) == (5, 32, 48, 3)
    assert s["task"] == "wan-t2v" and s["seeds"] == [0] and s["prompts"] == ["a cat runs", "the dog"]
    assert s["video_codec"] in ("libx264", "libopenh264", "mpeg4")
    assert data["versions"]["torch"] and data["versions"]["diffusers"]
    assert [c["name"] for c in data["candidates"]] == list(POLICIES)
    assert _cand(data, "q4_k_m")["weights"]["policy"] == "q4_k_m"


def test_report_html_is_self_contained(run):
    page = (run["out"] / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5
    assert page.count("data:video/mp4;base64,") == 2 * (1 + len(POLICIES))
    assert "http://" not in page and "https://" not in page
    for name in POLICIES:
        assert name in page


def test_existing_output_is_refused_without_overwrite(run):
    from vqtool.errors import OutputExistsError
    from vqtool.validate.run import validate

    with pytest.raises(OutputExistsError, match="--overwrite"):
        validate(str(run["pipe"]), [run["ggufs"]["q8_0"]], str(run["out"]), settings=SETTINGS, progress=False)
    assert (run["out"] / "report.json").is_file()
    assert not [p for p in os.listdir(run["root"]) if p.startswith(".val.tmp")]


def test_check_passes_and_fails_on_a_real_report(run):
    from vqtool.cli import main

    report = str(run["out"] / "report.json")
    q2 = _cand(run["report"], "q2_k")["summary"]["psnr_mean"]
    with pytest.raises(SystemExit) as ok:
        main(["check", report, "--min-psnr", str(math.floor(q2) - 1), "--min-ssim", "0.5"])
    assert ok.value.code == 0
    with pytest.raises(SystemExit) as bad:
        main(["check", report, "--min-psnr", str(math.ceil(q2) + 1)])
    assert bad.value.code == 1


def test_validate_cli_prints_a_summary_and_rejects_a_mismatched_candidate(run, tmp_path, capsys):
    from vqtool.cli import main
    from vqtool.quant.run import quantize_model
    from vqtool.testing import wan

    with pytest.raises(SystemExit) as done:
        main(["validate", "-r", str(run["pipe"]), "-c", run["ggufs"]["q8_0"], "-o", str(tmp_path / "v"),
              "--frames", "5", "--height", "32", "--width", "32", "--steps", "2", "--prompt", "a cat",
              "--no-weights", "--no-html", "--threads", "1"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "q8_0" in out and "PSNR" in out and "report.json" in out
    assert not (tmp_path / "v" / "report.html").exists()
    assert "weight_errors" not in json.loads((tmp_path / "v" / "report.json").read_text())["candidates"][0]

    vace = wan.build_transformer("vace", 0)
    src = wan.write_transformer(vace, tmp_path, "diffusers")
    quantize_model(str(src), [("q8_0", str(tmp_path / "vace.gguf"))], progress=False)
    with pytest.raises(SystemExit) as refused:
        main(["validate", "-r", str(run["pipe"]), "-c", str(tmp_path / "vace.gguf"), "-o", str(tmp_path / "w")])
    assert refused.value.code == 1
    assert "same model" in capsys.readouterr().err
