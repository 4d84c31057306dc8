"""Non-linear 4-bit types IQ4_NL (32-element blocks) and IQ4_XS (256, 6-bit sub-scales).

Both go through ``quantize_row_iq4_nl_impl`` with ``ntry = 7`` whether or not an
importance matrix is given (``ggml_quantize_chunk`` never calls the ``_ref`` variant,
whose ``ntry = -1`` gives different bytes). Without ``quant_weights`` the weights are
``x*x``; with them ``qw * sqrtf(sigma2 + x*x)``, ``sigma2 = 2*sum(x*x)/block``.
"""

from __future__ import annotations

from vqtool.ggml.search import GROUP_MAX_EPS

KVALUES = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)
NTRY = 7


# Midpoints between neighbouring table values. best_index_int8's test
# ``x - v[mu-1] < v[mu] - x`` equals ``x < midpoint`` in float32 for every float
# (differences near a midpoint are exact; checked on 3M values including every float
# within 3000 ulps of each midpoint), so the index is the count of midpoints <= x;
# the clamps at both ends fall out of the count.
MIDPOINTS = tuple((a + b) / 2 for a, b in zip(KVALUES[:-1], KVALUES[1:]))


def best_index(o, kv, a):
    """``best_index_int8(16, kvalues, a)``: nearest entry, ties to the upper one."""
    return o.count_ge(a, MIDPOINTS)


def _weights(o, x, qw, super_block: int):
    """Sub-block columns ``(32, S)`` and their weights."""
    if qw is None:
        xs = o.cols(x, 32)
        return xs, xs * xs
    xsb = o.cols(x, super_block)
    sigma2 = o.dot0(xsb, xsb) * (2.0 / super_block)
    if super_block == 32:
        xs = xsb
        qws = o.cols(o.bcast(qw[None, :], x.shape), 32)
        return xs, qws * o.sqrt(sigma2 + xs * xs)
    return _xs_weights(o, x, qw, sigma2)


def _xs_weights(o, x, qw, sigma2):
    nsb = sigma2.shape[0]
    xs = o.cols(x, 32)
    sig = o.cols(o.bcast(sigma2[:, None], (nsb, 256)), 32)
    qws = o.cols(o.bcast(qw[None, :], x.shape), 32)
    return xs, qws * o.sqrt(sig + xs * xs)


def _sums(o, kvf, xs, w, idx):
    q = o.take(kvf, idx)
    wq = w * q
    return o.dot0(wq, xs), o.dot0(wq, q)


def _subblock_scales(o, xs, w):
    """Per 32-element sub-block scale ``d`` of the first part of the C function."""
    kv = o.constant(KVALUES, like=xs)
    vmax, amax = o.maxabs0(xs)
    skip = amax < GROUP_MAX_EPS
    with o.errstate():
        d = o.div(-vmax, float(KVALUES[0]))
        inv = o.div(1.0, d)
        sumqx, sumq2 = _sums(o, kv, xs, w, best_index(o, kv, inv * xs))
        d = sumqx / sumq2
        best = d * sumqx
        for itry in range(-NTRY, NTRY + 1):
            inv = o.div(float(itry + KVALUES[0]), vmax)
            sumqx, sumq2 = _sums(o, kv, xs, w, best_index(o, kv, inv * xs))
            take = (sumq2 > 0) & (sumqx * sumqx > best * sumq2)
            d = o.where(take, sumqx / sumq2, d)
            best = o.where(take, d * sumqx, best)
    return o.where(skip, 0.0, d), kv


def _pack_nibbles(o, idx):
    """``(S, 32)`` indices -> 16 bytes each: element j low nibble, j+16 high nibble."""
    q = o.i32(idx)
    return o.u8(q[:, :16] | (q[:, 16:] << 4))


def encode_iq4_nl(o, x, qw=None):
    xs, w = _weights(o, x, qw, 32)
    d, kv = _subblock_scales(o, xs, w)
    with o.errstate():
        inv = o.where(d != 0, o.div(1.0, d), 0.0)
    idx = o.rows(best_index(o, kv, inv * xs))
    return o.cat([o.fp16_bytes(d), _pack_nibbles(o, idx)], axis=1)


def encode_iq4_xs(o, x, qw=None):
    xs, w = _weights(o, x, qw, 256)
    scales, kv = _subblock_scales(o, xs, w)
    sc = scales.reshape(-1, 8)
    max_scale, _ = o.maxabs0(sc.T)
    d = o.div(-max_scale, 32.0)
    with o.errstate():
        inv = o.where(d != 0, o.div(1.0, d), 0.0)
        ls = o.clip(o.nint(inv[:, None] * sc), -32, 31)
        dl = (d[:, None] * ls).reshape(-1)
        idl = o.where(dl != 0, o.div(1.0, dl), 0.0)
    idx = o.rows(best_index(o, kv, idl * xs))
    lq = o.i32(ls + 32.0)
    scales_l = (lq[:, 0::2] & 15) | ((lq[:, 1::2] & 15) << 4)
    h = lq >> 4
    scales_h = h[:, 0]
    for ib in range(1, 8):
        scales_h = scales_h | (h[:, ib] << (2 * ib))
    qs = _pack_nibbles(o, idx).reshape(-1, 128)
    return o.cat([o.fp16_bytes(d), o.u16_bytes(scales_h), o.u8(scales_l), qs], axis=1)
