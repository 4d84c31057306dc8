"""`vqtool check`: exit 0 when quality holds, 1 with a one-line reason when it regresses, 2 on unusable input."""

from __future__ import annotations

import json

import pytest

from vqtool.cli import main
from vqtool.validate.check import check_report


def _report(**candidates) -> dict:
    """A minimal valid report: name -> (psnr_mean, ssim_mean[, psnr_min])."""
    entries = []
    for name, values in candidates.items():
        psnr, ssim = values[:2]
        psnr_min = values[2] if len(values) > 2 else psnr
        entries.append({"name": name, "summary": {"psnr_mean": psnr, "ssim_mean": ssim, "psnr_min": psnr_min,
                                                  "ssim_min": ssim}})
    return {"report_version": 1, "candidates": entries}


def _write(tmp_path, name, report) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(report))
    return str(path)


def _exit(argv) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


def test_minimums_pass_when_every_candidate_meets_them():
    result = check_report(_report(q8=(45.0, 0.99), q4=(31.0, 0.93)), min_psnr=30, min_ssim=0.9)
    assert result.ok and "2 candidate(s)" in result.reason


def test_minimum_psnr_failure_names_candidate_and_values():
    result = check_report(_report(q8=(45.0, 0.99), q4=(29.5, 0.93)), min_psnr=30)
    assert not result.ok
    assert result.reason == "q4: PSNR (mean) 29.5 dB is below the minimum 30 dB"


def test_several_failures_are_one_line_with_a_count():
    result = check_report(_report(q4=(29.5, 0.80)), min_psnr=30, min_ssim=0.9)
    assert "\n" not in result.reason and result.reason.endswith("(and 1 more)")


def test_identical_videos_pass_any_minimum():
    assert check_report(_report(f16=("inf", 1.0)), min_psnr=1000, min_ssim=1.0).ok


def test_stat_min_checks_the_worst_video():
    report = _report(q4=(35.0, 0.95, 28.0))
    assert check_report(report, min_psnr=30).ok
    assert not check_report(report, min_psnr=30, stat="min").ok


def test_baseline_allows_a_drop_up_to_the_limit():
    old, new = _report(q4=(32.0, 0.95)), _report(q4=(31.6, 0.95))
    assert check_report(new, baseline=old, max_psnr_drop=0.5).ok
    result = check_report(new, baseline=old, max_psnr_drop=0.3)
    assert not result.ok and "fell from 32 dB to 31.6 dB" in result.reason


def test_baseline_alone_allows_no_drop_and_loss_of_exactness_is_a_regression():
    assert check_report(_report(q4=(32.0, 0.9)), baseline=_report(q4=(32.0, 0.9))).ok
    assert check_report(_report(f16=("inf", 1.0)), baseline=_report(f16=("inf", 1.0))).ok
    assert not check_report(_report(f16=(90.0, 1.0)), baseline=_report(f16=("inf", 1.0))).ok


def test_baseline_ssim_drop_and_missing_candidate():
    result = check_report(_report(q4=(32.0, 0.90)), baseline=_report(q4=(32.0, 0.95)), max_ssim_drop=0.01)
    assert not result.ok and "SSIM" in result.reason
    result = check_report(_report(q3=(30.0, 0.9)), baseline=_report(q4=(32.0, 0.95)))
    assert not result.ok and "not in the baseline" in result.reason


def test_candidate_filter_checks_only_the_named_ones():
    report = _report(q8=(45.0, 0.99), q2=(20.0, 0.7))
    assert check_report(report, min_psnr=30, candidates=["q8"]).ok
    from vqtool.errors import InputError

    with pytest.raises(InputError, match="no candidate named q5"):
        check_report(report, min_psnr=30, candidates=["q5"])


def test_cli_exit_codes(tmp_path, capsys):
    path = _write(tmp_path, "report.json", _report(q8=(45.0, 0.99), q4=(29.5, 0.93)))
    assert _exit(["check", path, "--min-psnr", "25"]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    assert _exit(["check", path, "--min-psnr", "30"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "q4: PSNR (mean) 29.5 dB is below the minimum 30 dB" in err
    assert _exit(["check", str(tmp_path), "--min-ssim", "0.95"]) == 1  # a folder holding report.json


def test_cli_baseline_and_json(tmp_path, capsys):
    old = _write(tmp_path, "old.json", _report(q4=(32.0, 0.95)))
    new = _write(tmp_path, "new.json", _report(q4=(31.0, 0.95)))
    assert _exit(["check", new, "--baseline", old, "--max-psnr-drop", "2"]) == 0
    capsys.readouterr()
    assert _exit(["check", new, "--baseline", old, "--max-psnr-drop", "0.5", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["checked"][0]["psnr_drop"] == pytest.approx(1.0)


@pytest.mark.parametrize("content, args", [
    (None, ["--min-psnr", "30"]),  # no such file
    ("not json", ["--min-psnr", "30"]),
    (json.dumps({"candidates": "x"}), ["--min-psnr", "30"]),
    (json.dumps({"report_version": 99, "candidates": []}), ["--min-psnr", "30"]),
    (json.dumps(_report(q4=(30.0, 0.9))), []),  # nothing to check
    (json.dumps(_report(q4=(30.0, 0.9))), ["--max-psnr-drop", "1"]),  # a drop without a baseline
])
def test_cli_unusable_report_or_options_exit_2(tmp_path, content, args):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    assert _exit(["check", str(path), *args]) == 2
