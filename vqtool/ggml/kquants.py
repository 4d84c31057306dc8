"""K-quants with 256-element super-blocks: Q4_K, Q5_K and Q6_K.

Without an importance matrix these follow ``quantize_row_q{4,5,6}_K_ref``; with one,
``quantize_row_q{4,5,6}_K_impl`` (what ``ggml_quantize_chunk`` picks). Q2_K and Q3_K
live in :mod:`vqtool.ggml.kquants_low`. All sub-blocks of the call are processed at
once as columns (see :mod:`vqtool.ggml.search`).

Every encoder takes ``x`` of shape ``(rows, n_per_row)`` and returns
``(rows * n_per_row / 256, type_size)`` uint8 blocks.
"""

from __future__ import annotations

from vqtool.ggml.search import GROUP_MAX_EPS, make_qkx_quants, make_qp_quants, make_qx_quants

QK_K = 256


def superblock_sigma2(o, x, factor: float):
    """``factor * sum(x*x) / 256`` per super-block, sum left to right: shape ``(nsb,)``."""
    x256 = o.cols(x, QK_K)
    return o.div(factor * o.dot0(x256, x256), float(QK_K))


def imatrix_weights(o, x, qw, sigma2, n: int):
    """``qw[j] * sqrtf(sigma2 + x[j]*x[j])`` as sub-block columns ``(n, S)``."""
    nsb = sigma2.shape[0]
    xs = o.cols(x, n)
    sig = o.cols(o.bcast(sigma2[:, None], (nsb, QK_K)), n)
    qws = o.cols(o.bcast(qw[None, :], x.shape), n)
    return xs, qws * o.sqrt(sig + xs * xs)


def max_from_zero(o, v):
    """Row max of ``(nsb, k)`` as C's ``if (s > m) m = s`` from ``m = 0``: never ``-0.0``."""
    m = o.max0(v.T)
    return o.where(m > 0, m, 0.0)


def per_superblock(v, k: int):
    """An ``(S,)`` per-sub-block vector as ``(nsb, k)``."""
    return v.reshape(-1, k)


def _requant_asym(o, xs, L, d, dmin, ls, lm, nmax: int):
    """Requantize each sub-block with the stored fp16 scales: ``(x + dm)/(d*sc)``.

    Sub-blocks whose ``d*sc`` is 0 keep the levels of the search, as in C.
    """
    with o.errstate():
        dsub = (d[:, None] * ls).reshape(-1)
        msub = (dmin[:, None] * lm).reshape(-1)
        Lq = o.clip(o.nint((xs + msub) / dsub), 0, nmax)
    return o.where(dsub != 0, Lq, L)


def _pack_scales_k4(o, ls, lm):
    """Pack 8 six-bit scales and mins (``(nsb, 8)`` ints) into the 12-byte K4 layout."""
    ls = o.i32(ls)
    lm = o.i32(lm)
    lo = ls[:, :4] | ((ls[:, 4:] >> 4) << 6)
    mid = lm[:, :4] | ((lm[:, 4:] >> 4) << 6)
    hi = (ls[:, 4:] & 15) | ((lm[:, 4:] & 15) << 4)
    return o.u8(o.cat([lo, mid, hi], axis=1))


def _pack_q4_qs(o, L):
    """``(nsb, 256)`` levels -> 128 bytes: byte ``32c+l`` = ``L[64c+l] | L[64c+32+l] << 4``."""
    q = o.i32(L).reshape(-1, 4, 2, 32)
    return o.u8(((q[:, :, 0] & 15) | ((q[:, :, 1] & 15) << 4)).reshape(-1, 128))


def _pack_q5_qh(o, L):
    """5th bits: ``qh[l]`` bit ``2c`` from ``L[64c+l]``, bit ``2c+1`` from ``L[64c+32+l]``."""
    h = ((o.i32(L) >> 4) & 1).reshape(-1, 4, 2, 32)
    acc = h[:, 0, 0] | (h[:, 0, 1] << 1)
    for c in range(1, 4):
        acc = acc | (h[:, c, 0] << (2 * c)) | (h[:, c, 1] << (2 * c + 1))
    return o.u8(acc)


def _encode_q45(o, x, qw, nmax: int, rmin: float, nstep: int):
    xs = o.cols(x, 32)
    if qw is None:
        sum_x2 = o.dot0(xs, xs)
        av_x = o.sqrt(o.div(sum_x2, 32.0))
        w = av_x + o.abs(xs)
        scales, mins, L = make_qkx_quants(o, xs, w, nmax, rmin, 0.1, nstep, False)
        sc = per_superblock(scales, 8)
        mn = per_superblock(mins, 8)
        max_scale = max_from_zero(o, sc)
        max_min = max_from_zero(o, mn)
        with o.errstate():
            inv_s = o.where(max_scale > 0, o.div(63.0, max_scale), 0.0)
            inv_m = o.where(max_min > 0, o.div(63.0, max_min), 0.0)
        # uint8_t ls = nearest_int(...); ls = MIN(63, ls)
        ls = o.minimum(_u8(o, o.nint(inv_s[:, None] * sc)), 63)
        lm = o.minimum(_u8(o, o.nint(inv_m[:, None] * mn)), 63)
        d = o.div(max_scale, 63.0)
        dmin = o.div(max_min, 63.0)
    else:
        sigma2 = superblock_sigma2(o, x, 2.0)
        xs, w = imatrix_weights(o, x, qw, sigma2, 32)
        sw = o.sum0(w)
        scales, mins, L = make_qkx_quants(o, xs, w, nmax, -0.9, 0.05, 36, False)
        sw8 = o.cols(sw, 8)
        d, Ls = make_qp_quants(o, o.cols(scales, 8), 63, sw8)
        dmin, Lm = make_qp_quants(o, o.cols(mins, 8), 63, sw8)
        ls = o.rows(Ls)
        lm = o.rows(Lm)
    d16 = o.fp16(d)
    m16 = o.fp16(dmin)
    L = _requant_asym(o, xs, L, d16, m16, ls, lm, nmax)
    Lb = o.rows(L).reshape(-1, QK_K)
    parts = [o.fp16_bytes(d), o.fp16_bytes(dmin), _pack_scales_k4(o, ls, lm)]
    if nmax == 31:
        parts.append(_pack_q5_qh(o, Lb))
    parts.append(_pack_q4_qs(o, Lb))
    return o.cat(parts, axis=1)


def encode_q4_k(o, x, qw=None):
    return _encode_q45(o, x, qw, 15, -1.0, 20)


def encode_q5_k(o, x, qw=None):
    return _encode_q45(o, x, qw, 31, -0.5, 15)


def encode_q6_k(o, x, qw=None):
    """Q6_K: ``make_qx_quants(16, 32, rmse 1)`` per sub-block, weights ``x*x`` or the raw
    importance matrix (``quantize_row_q6_K_impl`` does not use sigma2)."""
    xs = o.cols(x, 16)
    w = xs * xs if qw is None else o.cols(o.bcast(qw[None, :], x.shape), 16)
    scales, L = make_qx_quants(o, xs, 32, w)
    sc = per_superblock(scales, 16)
    max_scale, max_abs = o.maxabs0(sc.T)
    empty = max_abs < GROUP_MAX_EPS
    with o.errstate():
        iscale = o.div(-128.0, max_scale)
        d = o.div(1.0, iscale)
        # int8_t scales[ib] = MIN(127, nearest_int(iscale*scale))
        q_sc = _i8(o, o.minimum(o.nint(iscale[:, None] * sc), 127))
        d = o.where(empty, 0.0, d)
        q_sc = o.where(empty[:, None], 0.0, q_sc)
        dsub = (o.fp16(d)[:, None] * q_sc).reshape(-1)
        Lq = o.clip(o.nint(xs / dsub), -32, 31) + 32
    L = o.where(dsub != 0, Lq, L)
    Lb = o.i32(o.rows(L).reshape(-1, 2, 4, 32))
    ql_a = (Lb[:, :, 0] & 15) | ((Lb[:, :, 2] & 15) << 4)
    ql_b = (Lb[:, :, 1] & 15) | ((Lb[:, :, 3] & 15) << 4)
    ql = o.cat([ql_a[:, :, None], ql_b[:, :, None]], axis=2).reshape(-1, 128)
    qh = (Lb[:, :, 0] >> 4) | ((Lb[:, :, 1] >> 4) << 2) | ((Lb[:, :, 2] >> 4) << 4) | ((Lb[:, :, 3] >> 4) << 6)
    qh = qh.reshape(-1, 64)
    ql = o.where(empty[:, None], 0, ql)
    qh = o.where(empty[:, None], 0, qh)
    scale_bytes = o.i32(q_sc) & 255
    return o.cat([o.u8(ql), o.u8(qh), o.u8(scale_bytes), o.fp16_bytes(d)], axis=1)


def _u8(o, a):
    """Float-held integers stored into ``uint8_t`` (modulo 256)."""
    return a - 256.0 * o.floor(a * (1.0 / 256.0))


def _i8(o, a):
    """Float-held integers stored into ``int8_t`` (two's complement wrap)."""
    return _u8(o, a + 128.0) - 128.0
