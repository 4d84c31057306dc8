"""The torch path (device-agnostic) gives the same bytes as the numpy path and ggml.

Runs on the CPU in CI; the same code runs on CUDA, where the ``gpu`` test checks it
when a device is present. Protects the places where torch differs from C float
semantics unless handled: tree-shaped sums, ``scalar / tensor`` as reciprocal
multiplication, torch's not-correctly-rounded float32 sqrt, and ``-0.0`` maxima.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ggml_oracle
import vqtool.ggml as g

TYPES = g.available_types()


@pytest.mark.parametrize("kind", ["student_t", "zero_blocks", "constant_blocks", "tiny", "f32_subnormal", "large"])
@pytest.mark.parametrize("qtype", TYPES)
def test_torch_path_on_cpu_matches_numpy_path(qtype, kind):
    x = ggml_oracle.make_matrix(kind, 3, 512, seed=11)
    qw = ggml_oracle.make_imatrix(512, seed=11)
    for imatrix in (None, qw) if g.codec(qtype).uses_imatrix else (None,):
        ref = g.quantize(x, qtype, imatrix)
        got = g.quantize(torch.from_numpy(x), qtype, imatrix, device="torch:cpu")
        problem = ggml_oracle.first_mismatch(got, ref, g.codec(qtype).type_size)
        assert not problem, f"{qtype} imatrix={imatrix is not None}: {problem}"


def test_torch_path_rejects_non_finite_with_tensor_and_row():
    x = torch.ones(4, 256)
    x[2, 5] = float("nan")
    with pytest.raises(g.api.NonFiniteError, match=r"tensor 'w'.*row 2, column 5"):
        g.quantize(x, "Q4_K", name="w", device="torch:cpu")


def test_scan_probe_rejects_a_cumsum_that_does_not_add_in_c_order():
    # The CPU cumsum accumulates in double: the probe must notice, or a GPU whose scan
    # is not sequential would silently produce other bytes.
    from vqtool.ggml.torch_ops import scan_matches_loop

    assert scan_matches_loop("cpu") is False


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("qtype", TYPES)
def test_cuda_path_matches_ggml(qtype):
    x = ggml_oracle.make_matrix("student_t", 64, 1536, seed=2)
    qw = ggml_oracle.make_imatrix(1536, seed=2)
    for imatrix in (None, qw) if g.codec(qtype).uses_imatrix else (None,):
        got = g.quantize(torch.from_numpy(x).cuda(), qtype, imatrix)
        ref = g.quantize(x, qtype, imatrix)
        assert np.array_equal(got, ref), ggml_oracle.first_mismatch(got, ref, g.codec(qtype).type_size)
