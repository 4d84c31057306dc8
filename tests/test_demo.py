"""`vqtool demo`, the main job: bundled tiny Wan -> mixed-q4 and q8_0 GGUFs -> validated, summary printed."""

from __future__ import annotations

import json

import pytest

from vqtool.cli import main


def test_demo_quantizes_validates_and_prints_where_the_report_is(tmp_path, capsys):
    out = tmp_path / "demo"
    with pytest.raises(SystemExit) as done:
        main(["demo", "-o", str(out)])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "mixed-q4" in text and "q8_0" in text and "PSNR" in text
    assert str(out / "report" / "report.html") in text
    assert {p.name for p in out.iterdir()} == {"tiny-wan2.1-t2v-mixed-q4.gguf", "tiny-wan2.1-t2v-q8_0.gguf", "report"}
    report = json.loads((out / "report" / "report.json").read_text())
    s = {c["name"]: c["summary"] for c in report["candidates"]}
    assert s["q8_0"]["psnr_mean"] > s["mixed-q4"]["psnr_mean"] > 25
    assert s["mixed-q4"]["file_bytes"] < (out / "../demo").resolve().joinpath("tiny-wan2.1-t2v-q8_0.gguf").stat().st_size * 2

    with pytest.raises(SystemExit) as refused:  # an earlier demo's files are kept without --overwrite
        main(["demo", "-o", str(out)])
    assert refused.value.code == 1
    assert "--overwrite" in capsys.readouterr().err
