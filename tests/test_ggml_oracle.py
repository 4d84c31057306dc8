"""vqtool.ggml.quantize is byte-identical to ggml's ggml_quantize_chunk.

Protects the central promise of the codecs: for every type, with and without an
importance matrix, on data that reaches every branch of ggml-quants.c (zeros, ties,
fp16 subnormals, outliers, huge values) and on real transformer row lengths.
"""

from __future__ import annotations

import numpy as np
import pytest

import ggml_oracle
import vqtool.ggml as g

pytestmark = pytest.mark.skipif(ggml_oracle.load() is None, reason="libggml-python is not installed")

TYPES = g.available_types()
KINDS = list(ggml_oracle.DATA_KINDS)


def _assert_same(x, qtype, imatrix=None):
    c = g.codec(qtype)
    ours = g.quantize(x, qtype, imatrix)
    ref = ggml_oracle.quantize_chunk(x, qtype, imatrix if c.uses_imatrix else None)
    assert ours.shape == ref.shape and ours.dtype == np.uint8
    problem = ggml_oracle.first_mismatch(ours, ref, c.type_size)
    assert not problem, f"{qtype}: {problem}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("qtype", TYPES)
def test_matches_ggml_without_imatrix(qtype, kind):
    _assert_same(ggml_oracle.make_matrix(kind, 6, 512), qtype)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("qtype", [t for t in TYPES if g.codec(t).uses_imatrix])
def test_matches_ggml_with_imatrix(qtype, kind):
    _assert_same(ggml_oracle.make_matrix(kind, 6, 512), qtype, ggml_oracle.make_imatrix(512))


@pytest.mark.parametrize("qtype", ["Q8_0", "F16", "BF16", "F32"])
def test_types_that_ignore_the_imatrix_give_the_same_bytes_with_one(qtype):
    x = ggml_oracle.make_matrix("gaussian", 3, 256)
    assert np.array_equal(g.quantize(x, qtype), g.quantize(x, qtype, ggml_oracle.make_imatrix(256)))


@pytest.mark.parametrize("n_per_row", [1536, 5120, 8960, 13824])
@pytest.mark.parametrize("qtype", TYPES)
def test_matches_ggml_on_real_row_lengths(qtype, n_per_row):
    # Wan2.1 / CogVideoX widths; one heavy-tailed row plus one row with outliers.
    x = np.concatenate([ggml_oracle.make_matrix("student_t", 1, n_per_row, seed=n_per_row),
                        ggml_oracle.make_matrix("outlier_columns", 1, n_per_row, seed=n_per_row)])
    imatrix = ggml_oracle.make_imatrix(n_per_row, seed=n_per_row) if g.codec(qtype).uses_imatrix else None
    _assert_same(x, qtype, imatrix)


@pytest.mark.slow
@pytest.mark.parametrize("qtype", ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"])
def test_matches_ggml_on_a_larger_matrix_with_many_chunks(qtype):
    # Enough rows to be split across threads and chunks.
    x = ggml_oracle.make_matrix("student_t", 96, 1024, seed=3)
    _assert_same(x, qtype)
    _assert_same(x, qtype, ggml_oracle.make_imatrix(1024, seed=3))
