"""The float32 primitives behave exactly like the C code they stand for.

Protects the small facts bit exactness rests on, so a regression points at the
primitive rather than at a mismatching block somewhere in a codec.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from vqtool.ggml import iq4
from vqtool.ggml.floats import to_bf16_bits
from vqtool.ggml.ops import NUMPY
from vqtool.ggml.torch_ops import TorchOps

BACKENDS = [NUMPY, TorchOps("cpu")]


def _c_nearest_int(f: float) -> int:
    val = struct.unpack("<f", struct.pack("<f", np.float32(f) + np.float32(12582912.0)))[0]
    i = struct.unpack("<i", struct.pack("<f", val))[0]
    return (i & 0x007FFFFF) - 0x00400000


def _c_best_index(x: float) -> int:
    kv = iq4.KVALUES
    if x <= kv[0]:
        return 0
    if x >= kv[15]:
        return 15
    ml, mu = 0, 15
    while mu - ml > 1:
        mav = (ml + mu) // 2
        if x < kv[mav]:
            mu = mav
        else:
            ml = mav
    lo = np.float32(x) - np.float32(kv[mu - 1])
    hi = np.float32(kv[mu]) - np.float32(x)
    return mu - 1 if lo < hi else mu


def _as(o, a):
    return a if o is NUMPY else torch.from_numpy(a)


@pytest.mark.parametrize("o", BACKENDS, ids=lambda o: o.name)
def test_nint_is_ggml_nearest_int_even_beyond_rint_range(o):
    values = np.array([0.5, 1.5, 2.5, -0.5, -2.5, 3.49, 4194303.0, 5e6, -7e6, 1e9], np.float32)
    got = o.to_numpy(o.nint(_as(o, values))).astype(np.int64)
    assert got.tolist() == [_c_nearest_int(v) for v in values]
    assert got[7] != 5_000_000  # where ggml's trick and rint part ways


@pytest.mark.parametrize("o", BACKENDS, ids=lambda o: o.name)
def test_best_index_follows_the_c_binary_search_and_tie_rule(o):
    rng = np.random.default_rng(0)
    near = [np.float32(m).view(np.int32) + np.arange(-40, 41, dtype=np.int32) for m in iq4.MIDPOINTS]
    values = np.concatenate([rng.uniform(-140, 130, 4000).astype(np.float32),
                             np.concatenate(near).view(np.float32),
                             np.array(iq4.KVALUES + iq4.MIDPOINTS, np.float32)])
    got = o.to_numpy(iq4.best_index(o, None, _as(o, values)))
    assert got.tolist() == [_c_best_index(float(v)) for v in values]


@pytest.mark.parametrize("o", BACKENDS, ids=lambda o: o.name)
def test_sum0_adds_left_to_right_like_a_c_loop(o):
    a = np.array([[1e8, 1.0], [1.0, 1e8], [-1e8, -1e8], [1.0, 1.0]], np.float32)
    a = np.repeat(a, 3, axis=1)
    got = o.to_numpy(o.sum0(_as(o, a)))
    expect = []
    for col in a.T:
        s = np.float32(0)
        for v in col:
            s = np.float32(s + v)
        expect.append(s)
    assert got.tolist() == expect
    neg = o.to_numpy(o.sum0(_as(o, np.full((3, 2), -0.0, np.float32))))
    assert not np.signbit(neg).any()  # float s = 0; s += -0.0 gives +0.0


@pytest.mark.parametrize("o", BACKENDS, ids=lambda o: o.name)
def test_sqrt_and_division_are_correctly_rounded(o):
    v = np.random.default_rng(1).random(20000).astype(np.float32) * 1000
    ref = np.sqrt(v.astype(np.float64)).astype(np.float32)
    assert np.array_equal(o.to_numpy(o.sqrt(_as(o, v))), ref)
    assert np.array_equal(o.to_numpy(o.div(63.0, _as(o, v))),
                          (63.0 / v.astype(np.float64)).astype(np.float32))


def test_bf16_rounds_to_nearest_even_and_keeps_subnormals():
    u = np.array([0x3F808000, 0x3F818000, 0x3F808001, 0x00000001, 0x80010000], np.uint32)
    assert to_bf16_bits(u.view(np.float32)).tolist() == [0x3F80, 0x3F82, 0x3F81, 0x0000, 0x8001]


@pytest.mark.parametrize("o", BACKENDS, ids=lambda o: o.name)
def test_dot0_rounds_each_product_then_adds_in_order(o):
    rng = np.random.default_rng(3)
    a = (rng.standard_normal((32, 300)) * np.exp(rng.uniform(-8, 8, (32, 1)))).astype(np.float32)
    b = (rng.standard_normal((32, 300)) * 7.3).astype(np.float32)
    acc = np.zeros(300, np.float32)
    for i in range(32):
        acc = acc + a[i] * b[i]
    assert np.array_equal(o.to_numpy(o.dot0(_as(o, a), _as(o, b))), acc)
    if o is NUMPY:  # the non-contiguous fallback path
        assert np.array_equal(o.dot0(a[:, ::1], np.asfortranarray(b)), acc)
