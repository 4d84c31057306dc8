"""Decoding matches gguf-py bit for bit, and round trips lose what the bits allow.

Protects the decode half of the codecs and a sanity bound on the encode half: the
relative RMSE of every type stays near ggml's published figures and falls as bits rise.
"""

from __future__ import annotations

import gguf.quants
import numpy as np
import pytest

import ggml_oracle
import vqtool.ggml as g
from vqtool.errors import ShapeError

TYPES = g.available_types()

# Relative RMSE on N(0,1), from ggml's C quantizer on 512x4096 (reference doc, sec. 6),
# with 15% slack for the smaller test matrix.
C_RMSE = {"Q2_K": .297, "Q3_K": .151, "IQ4_XS": .0767, "Q4_0": .0859, "Q4_1": .0782,
          "IQ4_NL": .0761, "Q4_K": .0714, "Q5_0": .0427, "Q5_1": .0378, "Q5_K": .0361,
          "Q6_K": .0177, "Q8_0": .00535, "BF16": .00166, "F16": .0003, "F32": 0.0}


def _rel_rmse(x, y):
    return float(np.sqrt(np.mean((x - y) ** 2) / np.mean(x ** 2)))


@pytest.mark.parametrize("qtype", TYPES)
def test_dequantize_matches_gguf_py_bit_for_bit(qtype):
    x = ggml_oracle.make_matrix("student_t", 4, 1024)
    raw = g.quantize(x, qtype)
    ours = g.dequantize(raw, qtype, x.shape)
    theirs = gguf.quants.dequantize(raw, g.codec(qtype).qtype).astype(np.float32)
    assert ours.dtype == np.float32 and ours.shape == x.shape
    assert np.array_equal(ours.view(np.uint32), theirs.reshape(x.shape).view(np.uint32))


@pytest.mark.parametrize("qtype", TYPES)
def test_round_trip_error_is_near_ggml_figures(qtype):
    x = ggml_oracle.make_matrix("gaussian", 16, 4096)
    err = _rel_rmse(x, g.dequantize(g.quantize(x, qtype), qtype, x.shape))
    assert err <= C_RMSE[qtype] * 1.15 + 1e-7, err


def test_round_trip_error_falls_as_bits_rise():
    x = ggml_oracle.make_matrix("gaussian", 8, 2048)
    order = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_0", "BF16", "F16", "F32"]
    errs = [_rel_rmse(x, g.dequantize(g.quantize(x, t), t, x.shape)) for t in order]
    assert errs == sorted(errs, reverse=True), dict(zip(order, errs))


def test_imatrix_lowers_the_weighted_error():
    x = ggml_oracle.make_matrix("gaussian", 16, 2048)
    qw = ggml_oracle.make_imatrix(2048) + 1e-3
    for qtype in ["Q2_K", "Q3_K", "Q4_K", "IQ4_XS"]:
        def weighted(raw):
            y = g.dequantize(raw, qtype, x.shape)
            return float(np.sum(qw * (x - y) ** 2))
        assert weighted(g.quantize(x, qtype, qw)) < weighted(g.quantize(x, qtype)), qtype


def test_dequantize_accepts_bytes_and_checks_size():
    x = ggml_oracle.make_matrix("gaussian", 2, 256)
    raw = g.quantize(x, "Q4_K")
    assert np.array_equal(g.dequantize(raw.tobytes(), "Q4_K", (2, 256)), g.dequantize(raw, "Q4_K", (2, 256)))
    with pytest.raises(ShapeError, match="bytes do not hold"):
        g.dequantize(raw[:1], "Q4_K", (2, 256))
