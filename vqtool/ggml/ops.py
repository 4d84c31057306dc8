"""Array primitives the codecs are written against, with ggml's float32 semantics.

Every codec in this package is written once, against an ``Ops`` object, and runs on
numpy (:class:`NumpyOps`, the CPU exact path) or torch (``TorchOps`` in
:mod:`vqtool.ggml.torch_ops`, any device). The primitives are the few places where
bit exactness with ``ggml-quants.c`` is decided:

* ``sum0`` adds along axis 0 **left to right in float32**, the order of C's
  ``for (i...) sum += ...`` loops. numpy's reduction over a non-contiguous axis is
  sequential, while over the contiguous axis it is pairwise; that is why every codec
  keeps its sub-blocks column-wise, shape ``(elements, blocks)``.
* ``nint`` is ggml's ``nearest_int`` (the 12582912 trick), not ``rint``: they differ
  for ``|x| > 4194303``, which the requantization steps can reach on outliers.
* ``fp16`` rounds to IEEE half the way ``GGML_FP32_TO_FP16`` does (nearest even).

Arithmetic itself uses operators on float32 arrays with Python-float scalars that are
exactly representable in float32 (see :func:`f32c`), so numpy stays in float32 and
torch's double-precision scalar handling still rounds to the float32 result.
"""

from __future__ import annotations

import numpy as np

_MAGIC = np.float32(12582912.0)  # 1.5 * 2**23, ggml-quants.c nearest_int
# The clip ufunc itself: np.clip's Python wrapper costs more than the clip on 64 K floats.
_clip = getattr(getattr(np, "_core", None), "umath", None)
_clip = getattr(_clip, "clip", np.clip)


def f32c(value: float) -> float:
    """Return ``value`` rounded to float32, as a Python float (a C ``float`` constant)."""
    return float(np.float32(value))


def f32_mul(a: float, b: float) -> float:
    """C ``a*b`` on two floats, as a Python float."""
    return float(np.float32(a) * np.float32(b))


def f32_add(a: float, b: float) -> float:
    """C ``a+b`` on two floats, as a Python float."""
    return float(np.float32(a) + np.float32(b))


class NumpyOps:
    """numpy implementation of the codec primitives (float32, C operation order)."""

    name = "numpy"

    # -- construction and casts ------------------------------------------------
    @staticmethod
    def to_numpy(a) -> np.ndarray:
        return np.asarray(a)

    @staticmethod
    def f32(a):
        return a.astype(np.float32)

    @staticmethod
    def i32(a):
        return a.astype(np.int32)

    @staticmethod
    def u8(a):
        return a.astype(np.uint8)

    @staticmethod
    def cols(a, n: int):
        """``(rows, k)`` -> ``(n, rows*k/n)``: sub-blocks of ``n`` as contiguous columns."""
        return np.ascontiguousarray(a.reshape(-1, n).T)

    @staticmethod
    def rows(a):
        """Inverse of :meth:`cols` for a ``(n, S)`` array: ``(S, n)`` contiguous."""
        return np.ascontiguousarray(a.T)

    @staticmethod
    def bcast(a, shape):
        return np.broadcast_to(a, shape)

    @staticmethod
    def cat(parts, axis=1):
        return np.concatenate(parts, axis=axis)

    @staticmethod
    def u16_bytes(a):
        """uint16-valued int array ``(S,)`` -> little-endian bytes ``(S, 2)`` uint8."""
        return np.ascontiguousarray(a.astype("<u2")).view(np.uint8).reshape(-1, 2)

    @staticmethod
    def fp16_bytes(a):
        """float32 ``(S,)`` -> fp16 bytes ``(S, 2)`` (round to nearest even)."""
        with np.errstate(over="ignore"):  # ggml also turns |x| > 65504 into inf
            return np.ascontiguousarray(a.astype("<f2")).view(np.uint8).reshape(-1, 2)

    # -- ggml numerics -----------------------------------------------------------
    @staticmethod
    def fp16(a):
        """float32 -> fp16 -> float32, i.e. ``GGML_FP16_TO_FP32(GGML_FP32_TO_FP16(a))``."""
        with np.errstate(over="ignore"):
            return a.astype(np.float16).astype(np.float32)

    @staticmethod
    def nint(a):
        """ggml ``nearest_int`` as float32 values (exact for every float input)."""
        bits = (a + _MAGIC).view(np.int32)
        return ((bits & 0x007FFFFF) - 0x00400000).astype(np.float32)

    @staticmethod
    def rint(a):
        """Round half to even; equals ``nint`` for ``|a| <= 4194303`` (search loops)."""
        return np.rint(a)

    @staticmethod
    def trunc(a):
        return np.trunc(a)

    @staticmethod
    def floor(a):
        return np.floor(a)

    @staticmethod
    def sign(a):
        return np.sign(a)

    @staticmethod
    def clip(a, lo, hi):
        return _clip(a, lo, hi)

    @staticmethod
    def minimum(a, b):
        return np.minimum(a, b)

    @staticmethod
    def maximum(a, b):
        return np.maximum(a, b)

    @staticmethod
    def where(c, a, b):
        return np.where(c, a, b)

    @staticmethod
    def div(a, b):
        """``a / b`` in float32 where either side may be a Python scalar (C ``float`` division).

        A method, not the ``/`` operator, because torch turns ``scalar / tensor`` into
        ``reciprocal(tensor) * scalar`` and, on CUDA, ``tensor / scalar`` into a
        multiplication by the reciprocal: both round twice.
        """
        if isinstance(a, float):
            a = np.float32(a)
        if isinstance(b, float):
            b = np.float32(b)
        return np.divide(a, b)

    @staticmethod
    def select(take, new, old):
        """``where(take, new, old)`` for ``(n, S)`` small-integer levels and an ``(S,)`` mask.

        Exact because the levels are small integers; about 3x faster than a
        broadcasting ``np.where`` on this shape.
        """
        return old + (new - old) * take.astype(np.float32)

    @staticmethod
    def abs(a):
        return np.abs(a)

    @staticmethod
    def sqrt(a):
        return np.sqrt(a)

    @staticmethod
    def sum0(a):
        """Left-to-right float32 sum over axis 0, starting from +0 like ``float s = 0``."""
        return np.add.reduce(a, axis=0)

    @staticmethod
    def dot0(a, b):
        """``sum0(a * b)``: products rounded to float32, then added left to right.

        One ``einsum`` pass instead of two when this numpy build's einsum evaluates it
        that way (checked once by :func:`_einsum_is_exact`; a build whose einsum fuses
        the multiply-add, as on aarch64, falls back to the two passes).
        """
        if _EINSUM_EXACT and a.flags.c_contiguous and b.flags.c_contiguous and a.shape == b.shape:
            return np.einsum("ij,ij->j", a, b)
        return np.add.reduce(a * b, axis=0)

    @staticmethod
    def max0(a):
        """Max along axis 0; the first of equal values, so ``-0.0`` vs ``+0.0`` follows C."""
        return _first_extreme(a, a.max(axis=0), np.argmax)

    @staticmethod
    def min0(a):
        """Min along axis 0, first of equal values (C's ``if (x[i] < min) min = x[i]``)."""
        return _first_extreme(a, a.min(axis=0), np.argmin)

    @staticmethod
    def maxabs0(a):
        """Signed value with the largest ``|a|`` along axis 0 (first one wins) and that ``|a|``.

        This is C's ``if (fabsf(v) > amax) { amax = fabsf(v); max = v; }`` from
        ``amax = max = 0``: all-zero columns give ``(+0, +0)``.
        """
        ab = np.abs(a)
        amax = ab.max(axis=0)
        has_neg = (a == -amax).any(axis=0)
        val = np.where(has_neg, -amax, amax)
        # Only a column holding both +amax and -amax needs the first one's sign; argmax
        # along axis 0 is slow, so it runs on those columns alone.
        both = np.flatnonzero(has_neg & (a == amax).any(axis=0) & (amax > 0))
        if both.size:
            sub = a[:, both]
            val[both] = np.take_along_axis(sub, np.abs(sub).argmax(axis=0)[None], axis=0)[0]
        return np.where(amax > 0, val, np.float32(0)), amax

    @staticmethod
    def count_ge(a, thresholds):
        """How many of the ascending ``thresholds`` are not above ``a`` (int8).

        Counted as ``len - #(a < t)`` so that NaN gives the top index, like C's
        binary search, whose comparisons with NaN are all false.
        """
        idx = np.full(a.shape, len(thresholds), dtype=np.int8)
        for t in thresholds:
            idx -= a < t
        return idx

    @staticmethod
    def take(values, idx):
        return values[idx]

    @staticmethod
    def constant(values, like=None):
        """A float32 table (e.g. ``kvalues_iq4nl``) on the backend's device."""
        return np.asarray(values, dtype=np.float32)

    @staticmethod
    def errstate():
        """Context that silences the divide-by-zero/invalid warnings C also ignores."""
        return np.errstate(all="ignore")


def _first_extreme(a, m, arg):
    """``m`` (a max or min along axis 0), with a zero's sign taken from its first
    occurrence: the one case where equal float values differ (+0.0 and -0.0)."""
    zero = np.flatnonzero(m == 0)
    if zero.size:
        sub = a[:, zero]
        m = m.copy()
        m[zero] = np.take_along_axis(sub, arg(sub, axis=0)[None], axis=0)[0]
    return m


def _einsum_is_exact() -> bool:
    """Whether ``einsum('ij,ij->j')`` equals the float32 multiply-then-add loop.

    Probed on values whose products are inexact and whose sums cancel, so an FMA or a
    reordered sum would show up in a large share of the 8192 results.
    """
    rng = np.random.default_rng(12345)
    a = (rng.standard_normal((32, 8192)) * np.exp(rng.uniform(-6, 6, (32, 1)))).astype(np.float32)
    b = (rng.standard_normal((32, 8192)) * 7.3).astype(np.float32)
    acc = np.zeros(8192, np.float32)
    for i in range(32):
        acc = acc + a[i] * b[i]
    try:
        return bool(np.array_equal(np.einsum("ij,ij->j", a, b).view(np.int32), acc.view(np.int32)))
    except Exception:  # pragma: no cover - any failure means: do not use it
        return False


_EINSUM_EXACT = _einsum_is_exact()
NUMPY = NumpyOps()
