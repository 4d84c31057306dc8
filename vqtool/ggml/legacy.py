"""Legacy 32-element block types: Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0.

Without an importance matrix these are ``quantize_row_*_ref`` (closed-form scale,
truncating ``(int8_t)(x*id + 8.5f)`` rounding; Q8_0 uses ``roundf``). With one,
``quantize_row_q4_0_impl`` and friends run the weighted searches of
:mod:`vqtool.ggml.search`, with ``sigma2`` taken over the **whole row**. Q8_0 ignores
the importance matrix, as ``quantize_q8_0`` does.

Every encoder takes ``x`` of shape ``(rows, n_per_row)`` and returns
``(rows * n_per_row / 32, type_size)`` uint8 blocks.
"""

from __future__ import annotations

from vqtool.ggml.search import make_qkx_quants, make_qx_quants

QK = 32


def _pack_nibbles(o, q):
    """Levels as columns ``(32, S)`` -> ``(S, 16)`` bytes: element j in the low nibble,
    element j+16 in the high nibble."""
    q = o.i32(q)
    return o.u8(o.rows((q[:16] & 15) | ((q[16:] & 15) << 4)))


def _pack_qh(o, q):
    """5th bits of ``(32, S)`` levels as the little-endian u32 ``qh`` -> ``(S, 4)`` bytes."""
    hi = (o.i32(q) >> 4) & 1
    parts = []
    for byte in range(4):
        acc = hi[8 * byte]
        for bit in range(1, 8):
            acc = acc | (hi[8 * byte + bit] << bit)
        parts.append(acc[None])
    return o.u8(o.rows(o.cat(parts, axis=0)))


def _sym_ref(o, x, nlev: int):
    """Q4_0/Q5_0 ref: ``d = max/-nlev``, ``q = min(2*nlev-1, (int)(x*id + nlev+0.5))``."""
    xs = o.cols(x, QK)
    vmax, _ = o.maxabs0(xs)
    d = o.div(vmax, float(-nlev))
    inv = o.where(d != 0, o.div(1.0, d), 0.0)
    q = o.minimum(_c_int(o, xs * inv + (nlev + 0.5)), 2 * nlev - 1)
    return d, q


def _asym_ref(o, x, nmax: int):
    """Q4_1/Q5_1 ref: ``d = (max-min)/nmax``, ``q = (int)((x-min)*id + 0.5f)``."""
    xs = o.cols(x, QK)
    vmin = o.min0(xs)
    vmax = o.max0(xs)
    d = o.div(vmax - vmin, float(nmax))
    inv = o.where(d != 0, o.div(1.0, d), 0.0)
    q = _c_int(o, (xs - vmin) * inv + 0.5)
    return d, vmin, q


def _c_int(o, v):
    """C's float-to-integer cast as x86 does it: truncation, and 0 in the low byte for
    inf/NaN (``cvttss2si`` gives INT_MIN). Reached when ``1/d`` overflows on subnormal
    blocks."""
    return o.where(o.abs(v) < float("inf"), o.trunc(v), 0.0)


def _row_sigma2(o, x):
    """``sum_x2/n_per_row`` with the sum taken left to right over each row."""
    xt = o.rows(x)
    return o.div(o.dot0(xt, xt), float(x.shape[1]))


def _weights(o, x, qw):
    """``qw[j] * sqrtf(sigma2 + x[j]*x[j])`` as columns ``(32, S)``."""
    sigma2 = _row_sigma2(o, x)
    xs = o.cols(x, QK)
    sig = o.cols(o.bcast(sigma2[:, None], x.shape), QK)
    qws = o.cols(o.bcast(qw[None, :], x.shape), QK)
    return xs, qws * o.sqrt(sig + xs * xs)


def encode_q4_0(o, x, qw=None):
    if qw is None:
        d, q = _sym_ref(o, x, 8)
    else:
        xs, w = _weights(o, x, qw)
        d, q = make_qx_quants(o, xs, 8, w)
    return o.cat([o.fp16_bytes(d), _pack_nibbles(o, q)])


def encode_q5_0(o, x, qw=None):
    if qw is None:
        d, q = _sym_ref(o, x, 16)
    else:
        xs, w = _weights(o, x, qw)
        d, q = make_qx_quants(o, xs, 16, w)
    return o.cat([o.fp16_bytes(d), _pack_qh(o, q), _pack_nibbles(o, q)])


def _asym_impl(o, x, qw, nmax):
    xs, w = _weights(o, x, qw)
    d, the_min, L = make_qkx_quants(o, xs, w, nmax, -0.9, 0.05, 36, False)
    return d, -the_min, L


def encode_q4_1(o, x, qw=None):
    if qw is None:
        d, m, q = _asym_ref(o, x, 15)
        q = o.minimum(q, 15)
    else:
        d, m, q = _asym_impl(o, x, qw, 15)
    return o.cat([o.fp16_bytes(d), o.fp16_bytes(m), _pack_nibbles(o, q)])


def encode_q5_1(o, x, qw=None):
    if qw is None:
        d, m, q = _asym_ref(o, x, 31)
    else:
        d, m, q = _asym_impl(o, x, qw, 31)
    return o.cat([o.fp16_bytes(d), o.fp16_bytes(m), _pack_qh(o, q), _pack_nibbles(o, q)])


def encode_q8_0(o, x, qw=None):
    """``quantize_row_q8_0_ref``: ``d = amax/127``, ``q = roundf(x*id)`` (half away from 0)."""
    xs = o.cols(x, QK)
    amax = o.max0(o.abs(xs))
    d = o.div(amax, 127.0)
    inv = o.where(d != 0, o.div(1.0, d), 0.0)
    v = xs * inv
    a = o.abs(v)
    fl = o.floor(a)
    # roundf without the |v|+0.5 double rounding: floor(a) + floor(2*(a - floor(a)))
    r = o.sign(v) * (fl + o.floor(2.0 * (a - fl)))
    q = o.i32(_c_int(o, r)) & 255
    return o.cat([o.fp16_bytes(d), o.u8(o.rows(q))])
