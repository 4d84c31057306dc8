"""Metrics, video files and the weight-error arithmetic, on hand-made inputs with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vqtool.validate import metrics as M


def _video(t=5, h=24, w=20, seed=0):
    return np.random.default_rng(seed).random((t, h, w, 3), dtype=np.float32)


def test_psnr_of_a_known_error_and_of_identical_videos():
    a = np.zeros((2, 8, 8, 3), np.float32)
    assert M.psnr(a, a + 0.1) == pytest.approx(20.0, abs=1e-5)  # MSE 0.01
    assert M.psnr(a, a) == math.inf
    assert M.psnr_per_frame(a, np.stack([a[0], a[1] + 0.01])) == [math.inf, pytest.approx(40.0, abs=1e-4)]


def test_ssim_of_identical_frames_is_exactly_one():
    v = _video()
    assert M.ssim_per_frame(v, v) == [1.0] * len(v)


def test_ssim_of_constant_frames_matches_the_closed_form():
    # Constant frames: variances and covariance vanish, SSIM = (2ab + C1) / (a^2 + b^2 + C1).
    a, b = 0.3, 0.6
    x = np.full((1, 16, 16, 3), a, np.float32)
    y = np.full((1, 16, 16, 3), b, np.float32)
    c1 = (0.01) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert M.ssim(x, y) == pytest.approx(expected, rel=1e-5)


def test_ssim_is_symmetric_and_falls_with_noise():
    v = _video()
    rng = np.random.default_rng(1)
    small = np.clip(v + rng.normal(0, 0.02, v.shape), 0, 1)
    large = np.clip(v + rng.normal(0, 0.2, v.shape), 0, 1)
    assert M.ssim(v, small) == pytest.approx(M.ssim(small, v), abs=1e-12)
    assert 1.0 > M.ssim(v, small) > M.ssim(v, large) > 0


def test_ssim_handles_frames_smaller_than_the_window():
    v = _video(t=2, h=6, w=5)
    assert M.ssim(v, v) == 1.0
    assert M.ssim(v, v * 0.5) < 1.0


def test_flicker_of_a_static_and_an_alternating_video():
    still = np.full((4, 4, 4, 3), 0.5, np.float32)
    assert M.flicker(still) == 0.0 and M.flicker_per_frame(still) == [0.0] * 3
    blink = np.stack([np.zeros((4, 4, 3)), np.ones((4, 4, 3))] * 2).astype(np.float32)
    assert M.flicker(blink) == 1.0
    assert M.flicker(still[:1]) == 0.0


def test_relative_error_and_latent_errors():
    import torch

    r = torch.tensor([3.0, 4.0])
    assert M.relative_error(r, r) == 0.0
    assert M.relative_error(r, torch.tensor([3.0, 4.5])) == pytest.approx(0.1)
    assert M.relative_error(torch.zeros(2), torch.zeros(2)) == 0.0
    assert M.latent_errors([r, r], [r, 2 * r]) == [0.0, pytest.approx(1.0)]
    with pytest.raises(ValueError, match="step counts"):
        M.latent_errors([r], [r, r])


def test_mismatched_frames_are_rejected():
    with pytest.raises(ValueError, match="shapes differ"):
        M.psnr(_video(h=8), _video(h=10))


def test_json_numbers_keep_report_json_strict():
    values = [M.json_number(v) for v in (math.inf, -math.inf, math.nan, 1.23456789, None)]
    assert values == ["inf", "-inf", "nan", 1.234568, None]
    json.dumps(values, allow_nan=False)
    assert M.from_json_number("inf") == math.inf


@pytest.mark.parametrize("h, w", [(32, 48), (17, 23)])
def test_mp4_round_trip_keeps_frame_count_and_size(tmp_path, h, w):
    from vqtool.validate.video import read_video, to_uint8, write_mp4

    v = np.clip(_video(t=9, h=h, w=w) * 0.2 + np.linspace(0, 0.8, w)[None, None, :, None], 0, 1)
    codec = write_mp4(v, str(tmp_path / "v.mp4"), fps=8)
    back = read_video(str(tmp_path / "v.mp4"))
    assert back.shape == (9, h + h % 2, w + w % 2, 3)
    assert codec in ("libx264", "libopenh264", "mpeg4")
    # Near-lossless encoding: the decoded video is close to what was written.
    assert M.psnr(to_uint8(v) / 255.0, back[:, :h, :w] / 255.0) > 25
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temp file left


def test_side_by_side_layout_and_amplified_difference():
    from vqtool.validate.video import side_by_side

    ref = np.full((2, 4, 6, 3), 0.5, np.float32)
    cand = ref + 0.01
    frames = side_by_side(ref, cand, gain=10, gap=2)
    assert frames.shape == (2, 4, 6 * 3 + 4, 3)
    assert np.allclose(frames[..., -6:, :], 0.1)
    assert np.all(frames[..., 6:8, :] == 1.0)


def test_weight_table_aggregates_by_energy():
    from vqtool.validate.weights import TensorError, WeightTable

    t = WeightTable([
        TensorError("a", "ffn.up", 0, "main", (2,), "Q4_K", signal=100.0, noise=1.0, numel=2),
        TensorError("b", "ffn.up", 1, "main", (2,), "Q4_K", signal=300.0, noise=3.0, numel=2),
        TensorError("c", "norm", None, None, (2,), "F32", signal=5.0, noise=0.0, numel=2),
    ])
    role = t.by_role()
    assert role["ffn.up"]["rel_rmse"] == pytest.approx(0.1) and role["ffn.up"]["snr_db"] == pytest.approx(20.0)
    assert role["norm"]["rel_rmse"] == 0.0 and role["norm"]["snr_db"] == "inf"
    assert set(t.by_block()) == {"main.0", "main.1"}
    overall = t.overall()
    assert overall["worst_tensor"] in ("a", "b") and overall["tensors"] == 3
    json.dumps(t.to_dict(), allow_nan=False)


def test_candidate_labels_are_unique():
    from vqtool.validate.weights import candidate_label

    taken: set[str] = set()
    labels = [candidate_label(p, pol, taken) for p, pol in
              [("a/x.gguf", "q4_k_m"), ("b/y.gguf", "q4_k_m"), ("c/model.gguf", None)]]
    assert labels == ["q4_k_m", "q4_k_m-2", "model"]


def test_output_folder_is_assembled_aside_and_replaced_only_with_overwrite(tmp_path):
    from vqtool.errors import OutputExistsError
    from vqtool.validate.files import commit_folder, start_folder

    out = tmp_path / "val"
    tmp = start_folder(str(out), overwrite=False)
    (tmp_path / tmp / "report.json").write_text("{}")
    commit_folder(tmp, str(out))
    assert [p.name for p in tmp_path.iterdir()] == ["val"] and (out / "report.json").is_file()
    with pytest.raises(OutputExistsError, match="--overwrite"):
        start_folder(str(out), overwrite=False)
    tmp = start_folder(str(out), overwrite=True)
    (tmp_path / tmp / "new.json").write_text("{}")
    commit_folder(tmp, str(out))
    assert sorted(p.name for p in out.iterdir()) == ["new.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["val"]
    empty = tmp_path / "empty"
    empty.mkdir()
    commit_folder(start_folder(str(empty), overwrite=False), str(empty))  # an empty folder is free to use
