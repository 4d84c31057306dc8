"""The public surface of vqtool.ggml: type facts, input checks, errors, registry, threads.

Protects what the GGUF writer and users rely on besides the bytes themselves: clear
errors that name the tensor and row, shapes that must divide, a registry that refuses
duplicates, and results that do not depend on threads or chunking.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

import ggml_oracle
import vqtool.ggml as g
from vqtool.errors import NonFiniteError, ShapeError, VqtoolError
from vqtool.ggml import parallel
from vqtool.ggml.registry import Codec, CodecRegistry

EXPECTED = ["F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K", "Q4_K",
            "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS", "BF16"]


def test_every_issue_type_is_available_in_id_order():
    assert g.available_types() == EXPECTED


@pytest.mark.parametrize("qtype", EXPECTED)
def test_type_facts_agree_with_gguf_py(qtype):
    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[qtype]]
    assert g.block_size(qtype) == block
    assert g.row_size(qtype, 13824) == 13824 // block * size
    assert g.bits_per_weight(qtype) == pytest.approx(8 * size / block)


def test_types_resolve_from_names_ids_and_enums():
    assert g.codec("q4_k") is g.codec(GGMLQuantizationType.Q4_K) is g.codec(12)
    with pytest.raises(VqtoolError, match="unknown GGML type name 'Q9_K'"):
        g.codec("Q9_K")
    with pytest.raises(VqtoolError, match="no vqtool codec"):
        g.codec("IQ2_XXS")


def test_can_quantize_checks_block_divisibility():
    assert g.can_quantize("Q4_K", 5120)
    assert not g.can_quantize("Q4_K", 5000)
    assert g.can_quantize("Q8_0", 5024)
    assert not g.can_quantize("IQ2_XXS", 256)


def test_registry_rejects_a_second_codec_for_the_same_type():
    reg = CodecRegistry()
    reg.register(Codec(GGMLQuantizationType.Q4_0, lambda o, x, qw: None, True))
    with pytest.raises(VqtoolError, match="Q4_0 is already registered"):
        reg.register(Codec(GGMLQuantizationType.Q4_0, lambda o, x, qw: None, True))


@pytest.mark.parametrize("qtype", ["Q4_K", "F16", "Q8_0"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_names_tensor_and_row(bad, qtype):
    x = np.ones((5, 256), np.float32)
    x[3, 17] = bad
    with pytest.raises(NonFiniteError) as err:
        g.quantize(x, qtype, name="blocks.3.attn.to_q.weight")
    message = str(err.value)
    assert "blocks.3.attn.to_q.weight" in message and "row 3" in message and "column 17" in message


@pytest.mark.parametrize("device", ["cpu", "torch:cpu"])
def test_values_beyond_ggml_float32_range_are_refused_for_quantized_types(device):
    x = np.ones((4, 256), np.float32)
    x[2, 3] = 3e19  # x*x overflows float32; ggml would write inf scales
    with pytest.raises(VqtoolError, match=r"tensor 'w'.*magnitude 3e\+19 in row 2"):
        g.quantize(x, "Q4_K", name="w", device=device)
    assert g.quantize(x, "F16").shape == (4, 512)  # plain conversions have no such limit


def test_non_finite_imatrix_is_rejected():
    qw = np.ones(256, np.float32)
    qw[9] = np.nan
    with pytest.raises(NonFiniteError, match="importance matrix"):
        g.quantize(np.ones((2, 256), np.float32), "Q4_K", qw, name="w")


def test_indivisible_row_length_states_both_numbers():
    with pytest.raises(ShapeError, match=r"row length 1000 is not divisible by the Q4_K block size 256"):
        g.quantize(np.ones((2, 1000), np.float32), "Q4_K", name="w")
    with pytest.raises(ShapeError, match="1000.*32"):
        g.quantize(np.ones((2, 1000), np.float32), "Q8_0")


def test_imatrix_of_the_wrong_length_is_rejected():
    with pytest.raises(ShapeError, match="128 values but rows have 256"):
        g.quantize(np.ones((2, 256), np.float32), "Q4_K", np.ones(128, np.float32))


def test_three_dimensional_input_is_rejected():
    with pytest.raises(ShapeError, match="2-D"):
        g.quantize(np.ones((2, 2, 256), np.float32), "Q4_0")


def test_one_row_vector_and_torch_tensor_inputs_are_accepted():
    x = ggml_oracle.make_matrix("gaussian", 3, 512)
    ref = g.quantize(x, "Q4_K")
    assert np.array_equal(g.quantize(x[1], "Q4_K"), ref[1:2])
    assert np.array_equal(g.quantize(torch.from_numpy(x), "Q4_K"), ref)
    assert np.array_equal(g.quantize(torch.from_numpy(x).to(torch.float64), "Q4_K"), ref)


def test_empty_matrix_gives_empty_bytes():
    assert g.quantize(np.zeros((0, 256), np.float32), "Q6_K").shape == (0, 210)


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_K", "Q6_K", "IQ4_XS"])
def test_result_does_not_depend_on_threads_or_chunking(qtype, monkeypatch):
    x = ggml_oracle.make_matrix("student_t", 24, 512, seed=5)
    qw = ggml_oracle.make_imatrix(512, seed=5)
    one = g.quantize(x, qtype, qw, threads=1)
    monkeypatch.setattr(parallel, "CHUNK_ELEMENTS", 1024)
    assert len(parallel.row_chunks(24, 512)) == 12  # the patched default is what quantize uses
    assert np.array_equal(g.quantize(x, qtype, qw, threads=2), one)


def test_row_chunks_cover_every_row_once():
    spans = parallel.row_chunks(1000, 13824, 1 << 16)
    assert spans[0][0] == 0 and spans[-1][1] == 1000
    assert all(a == b for (_, a), (b, _) in zip(spans, spans[1:]))
