"""Model cards and folder scans: every published file listed with its real size, bits per weight,
metrics from its validation report and the types its roles were written in; nothing dropped silently.

The family here is built with vqtool's own quantizer and torchao export; its report.json follows
``vqtool validate``'s layout (report_version 1). The card is checked against numbers read
independently: file sizes from the file system, types from gguf-py's reader.
"""

from __future__ import annotations

import json
import os

import pytest

from vqtool.errors import InputError
from vqtool.publish.card import CardInfo, render_card
from vqtool.publish.reports import candidate_metrics, read_report
from vqtool.publish.variants import Variant, scan_folder
from vqtool.testing import wan

POLICIES = ["q8_0", "q4_k_m", "mixed-q4"]


def write_report(folder, entries: dict[str, dict], settings=None) -> str:
    """A report.json in ``vqtool validate``'s layout (report_version 1) for ``{path: summary}``."""
    os.makedirs(folder, exist_ok=True)
    report = {"report_version": 1, "tool": "vqtool validate",
              "settings": settings or {"frames": 9, "height": 32, "width": 32, "steps": 3},
              "reference": {"weights": {"path": "ref"}, "videos": []},
              "candidates": [{"name": os.path.basename(p), "weights": {"path": p}, "summary": s, "videos": []}
                             for p, s in entries.items()]}
    path = os.path.join(folder, "report.json")
    with open(path, "w") as f:
        json.dump(report, f)
    return path


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    from vqtool.publish.family import make_family

    root = tmp_path_factory.mktemp("family")
    src = wan.write_transformer(wan.build_transformer("t2v", seed=5), root, "diffusers")
    calls = []

    def fake_validator(src, candidates, out, pipeline, options, overwrite):
        calls.append((src, list(candidates), out, pipeline))
        summaries = {c: {"videos": 2, "psnr_mean": 40.0 - i * 5, "ssim_mean": 0.99 - i * 0.01}
                     for i, c in enumerate(candidates)}
        summaries[candidates[-1]] = {"videos": 2, "psnr_mean": "inf", "ssim_mean": 1.0}
        return write_report(out, summaries)

    out = root / "out"
    result = make_family(str(src), str(out), POLICIES + ["int8-weight-only"], name="tiny-wan",
                         info=CardInfo(repo_id="me/tiny-wan", base_model="me/tiny-base", license="apache-2.0"),
                         validator=fake_validator, progress=False, torchao_dtype="f32")
    return out, result, calls


def test_family_writes_every_variant_in_one_run_and_validates_them_together(family):
    out, result, calls = family
    assert [(o.policy, o.kind) for o in result.outputs] == [(p, "gguf") for p in POLICIES] + [("int8-weight-only", "torchao")]
    assert sorted(os.listdir(out)) == sorted(["README.md", "validation", "tiny-wan-int8-weight-only"]
                                             + [f"tiny-wan-{p}.gguf" for p in POLICIES])
    (_, candidates, report_dir, _), = calls  # one validation run over all variants
    assert candidates == [o.path for o in result.outputs] and report_dir == str(out / "validation")
    assert result.card == str(out / "README.md")


def test_card_lists_every_file_with_its_size_bits_and_report_metrics(family):
    from vqtool.inspect import human_bytes

    out, result, _ = family
    card = (out / "README.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in card.splitlines() if line.startswith("| `tiny-wan")}
    assert set(rows) == {f"`tiny-wan-{p}.gguf`" for p in POLICIES} | {"`tiny-wan-int8-weight-only/`"}
    for i, o in enumerate(result.outputs):
        name = f"`{os.path.basename(o.path)}{'/' if o.kind == 'torchao' else ''}`"
        fmt, policy, size, bpw, psnr, ssim = rows[name]
        assert policy == o.policy
        on_disk = os.path.getsize(o.path) if o.kind == "gguf" else sum(
            os.path.getsize(os.path.join(o.path, f)) for f in os.listdir(o.path))
        assert size == human_bytes(on_disk)
        assert bpw != "n/a"
        if i < len(result.outputs) - 1:
            assert psnr == f"{40.0 - i * 5:.2f} dB" and ssim == f"{0.99 - i * 0.01:.4f}"
        else:
            assert psnr == "identical" and ssim == "1.0000"
    assert "means over the 2 videos" in card and "frames 9, height 32, width 32, steps 3" in card
    assert "[`validation/report.json`](validation/report.json)" in card


def test_card_front_matter_how_to_load_and_source(family):
    out, _, _ = family
    card = (out / "README.md").read_text()
    front = card.split("---")[1]
    assert "license: apache-2.0" in front and "base_model: me/tiny-base" in front
    assert "base_model_relation: quantized" in front and "library_name: gguf" in front
    assert "Unet Loader (GGUF)" in card and "GGUFQuantizationConfig" in card
    assert 'hf_hub_download("me/tiny-wan", "tiny-wan-' in card
    assert 'subfolder="tiny-wan-int8-weight-only"' in card
    assert "Source file `diffusion_pytorch_model.safetensors`" in card and "sha256:" in card
    assert card.count("- Source file ") == 1  # GGUF and torchao variants carry the same (once computed) hash
    made = next(line for line in card.splitlines() if line.startswith("- Made with vqtool"))
    assert set(made.split("--policy ")[1].split("`")[0].split(",")) == set(POLICIES)


def test_high_precision_table_matches_the_types_gguf_py_reads(family):
    from gguf import GGUFReader

    out, _, _ = family
    card = (out / "README.md").read_text()
    header = next(line for line in card.splitlines() if line.startswith("| Role (2-D weights)"))
    columns = [c.strip(" `") for c in header.split("|")[2:-1]]
    table = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
             for line in card.splitlines() if line.startswith("| ffn.") or line.startswith("| attn.self.q")}
    reader = GGUFReader(str(out / "tiny-wan-mixed-q4.gguf"))
    up = {t.tensor_type.name for t in reader.tensors if t.name.endswith("ffn.0.weight")}
    q = {t.tensor_type.name for t in reader.tensors if t.name.endswith("self_attn.q.weight")}
    col = columns.index("tiny-wan-mixed-q4.gguf")
    assert table["ffn.up"][col] == ", ".join(sorted(up)) == "Q4_K"
    assert table["attn.self.q"][col] == ", ".join(sorted(q)) == "F16"
    assert table["ffn.up"][columns.index("tiny-wan-int8-weight-only")] == "torchao Int8WeightOnly"


def test_rendering_is_deterministic(family):
    out, _, _ = family
    info = CardInfo(repo_id="me/tiny-wan", base_model="me/tiny-base", license="apache-2.0")
    assert render_card(scan_folder(out), info) == render_card(scan_folder(out), info) == (out / "README.md").read_text()


def test_scan_lists_what_it_leaves_out_and_takes_loras_and_includes(family, tmp_path):
    import shutil

    import torch
    from safetensors.torch import save_file

    out, _, _ = family
    folder = tmp_path / "pub"
    shutil.copytree(out, folder)
    (folder / "notes.txt").write_text("hello")
    (folder / "workflow.json").write_text("{}")
    save_file({"blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 256),
               "blocks.0.attn1.to_q.lora_B.weight": torch.zeros(256, 4)}, str(folder / "style-lora.safetensors"))
    save_file({"x.weight": torch.zeros(2, 2)}, str(folder / "stray.safetensors"))
    scan = scan_folder(folder, include=("*.json",))
    assert [v.kind for v in scan.variants].count("lora") == 1
    lora = next(v for v in scan.variants if v.kind == "lora")
    assert lora.note == "1 adapted layers, rank 4"
    skipped = dict(scan.skipped)
    assert set(skipped) == {"notes.txt", "stray.safetensors", "README.md"}
    assert "replaced by the generated model card" in skipped["README.md"]
    assert "workflow.json" in scan.extra
    files = scan.upload_files()
    assert "validation/report.json" in files and "style-lora.safetensors" in files
    assert "tiny-wan-int8-weight-only/vqtool.json" in files and "notes.txt" not in files
    card = render_card(scan, CardInfo(repo_id="me/x", base_model="me/b", license="mit"))
    assert "load_lora_weights(\"me/x\", weight_name=\"style-lora.safetensors\")" in card


@pytest.mark.parametrize("family_name, variant, base, license_", [
    ("wan", "t2v-14B", "Wan-AI/Wan2.1-T2V-14B", "apache-2.0"),
    ("wan", "vace-1.3B", "Wan-AI/Wan2.1-VACE-1.3B", "apache-2.0"),
    ("cogvideox", "2b", "THUDM/CogVideoX-2b", "apache-2.0"),
    ("cogvideox", "5b-i2v", "THUDM/CogVideoX-5b-I2V", "other"),
])
def test_released_models_give_base_model_and_license(tmp_path, family_name, variant, base, license_):
    from vqtool.publish.variants import Scan

    scan = Scan(str(tmp_path), variants=[Variant("gguf", "m.gguf", str(tmp_path / "m.gguf"), ["m.gguf"], 10,
                                                 policy="q8_0", family=family_name, variant=variant)])
    card = render_card(scan, CardInfo(repo_id="me/m"), metrics={})
    front = card.split("---")[1]
    assert f"base_model: {base}" in front and f"license: {license_}" in front
    if license_ == "other":
        assert "license_name: cogvideox-license" in front and f"https://huggingface.co/{base}/blob/main/LICENSE" in front
        assert "ComfyUI-GGUF has no CogVideoX architecture" in card and "load_gguf_transformer" in card
    if variant.startswith("vace"):
        assert "WanVACETransformer3DModel" in card and "WanVACEPipeline" in card


def test_custom_models_warn_until_base_model_and_license_are_given(family):
    from vqtool.publish.card import origin

    out, _, _ = family
    warnings = origin(scan_folder(out), CardInfo(repo_id="me/x")).warnings
    assert any("--base-model" in w for w in warnings) and any("--license" in w for w in warnings)
    assert origin(scan_folder(out), CardInfo(repo_id="me/x", base_model="a/b", license="mit")).warnings == []


def test_report_adapter_reads_validate_layout_and_refuses_others(tmp_path):
    path = write_report(tmp_path / "r", {"/a/x-q8_0.gguf": {"psnr_mean": "inf", "ssim_mean": 1.0, "videos": 3},
                                         "/a/x-int8/": {"psnr_mean": 31.5, "ssim_mean": None}})
    m = {c.key: c for c in read_report(path)}
    assert m["x-q8_0.gguf"].psnr == float("inf") and m["x-q8_0.gguf"].videos == 3
    assert m["x-int8"].psnr == 31.5 and m["x-int8"].ssim is None
    with pytest.raises(InputError, match="report_version 2"):
        candidate_metrics({"report_version": 2, "candidates": []})
    with pytest.raises(InputError, match="not a readable report.json"):
        (tmp_path / "bad.json").write_text("{")
        read_report(tmp_path / "bad.json")


def test_validate_report_module_matches_the_adapter_contract():
    """If vqtool.validate changes its report layout, this fails here rather than in a published card."""
    report = pytest.importorskip("vqtool.validate.report")
    assert report.REPORT_VERSION == 1
    assert {"psnr_mean", "ssim_mean"} <= set(report.SUMMARY_KEYS)
