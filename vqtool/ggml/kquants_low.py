"""Low-bit K-quants with 16-element sub-blocks: Q2_K and Q3_K.

``quantize_row_q{2,3}_K_ref`` without an importance matrix, ``*_impl`` with one.
Shares the super-block helpers of :mod:`vqtool.ggml.kquants`.
"""

from __future__ import annotations

from vqtool.ggml.kquants import (
    _i8,
    imatrix_weights,
    max_from_zero,
    per_superblock,
    superblock_sigma2,
)
from vqtool.ggml.search import make_q3_quants, make_qkx_quants, make_qp_quants, make_qx_quants


def _pack_2bit(o, L):
    """``(nsb, 256)`` 2-bit levels -> 64 bytes: ``qs[32n+l]`` holds ``128n+l+32k`` at bits 2k."""
    q = (o.i32(L) & 3).reshape(-1, 2, 4, 32)
    acc = q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)
    return o.u8(acc.reshape(-1, 64))


def encode_q2_k(o, x, qw=None):
    if qw is None:
        xs = o.cols(x, 16)
        scales, mins, L = make_qkx_quants(o, xs, o.abs(xs), 3, -0.5, 0.1, 15, True)
        sc = per_superblock(scales, 16)
        mn = per_superblock(mins, 16)
        max_scale = max_from_zero(o, sc)
        max_min = max_from_zero(o, mn)
        with o.errstate():
            ls = o.nint(o.div(15.0, max_scale)[:, None] * sc)
            lm = o.nint(o.div(15.0, max_min)[:, None] * mn)
        # y.scales[j] = l (uint8_t), then y.scales[j] |= (l << 4) for the mins
        ls = o.i32(o.where((max_scale > 0)[:, None], ls, 0.0))
        lm = o.i32(o.where((max_min > 0)[:, None], lm, 0.0))
        packed = (ls | (lm << 4)) & 255
        d = o.where(max_scale > 0, o.div(max_scale, 15.0), 0.0)
        dmin = o.where(max_min > 0, o.div(max_min, 15.0), 0.0)
    else:
        sigma2 = superblock_sigma2(o, x, 1.0)
        xs, w = imatrix_weights(o, x, qw, sigma2, 16)
        sw = o.sum0(w)
        scales, mins, L = make_qkx_quants(o, xs, w, 3, -0.9, 0.05, 36, False)
        sw16 = o.cols(sw, 16)
        d, Ls = make_qp_quants(o, o.cols(scales, 16), 15, sw16)
        dmin, Lm = make_qp_quants(o, o.cols(mins, 16), 15, sw16)
        packed = (o.i32(o.rows(Ls)) | (o.i32(o.rows(Lm)) << 4)) & 255
    d16 = o.fp16(d)
    m16 = o.fp16(dmin)
    sc_q = o.f32(packed & 15)
    mn_q = o.f32(packed >> 4)
    with o.errstate():  # fp16 overflow gives inf * 0 = nan here, as in C
        dsub = (d16[:, None] * sc_q).reshape(-1)
        msub = (m16[:, None] * mn_q).reshape(-1)
        Lq = o.clip(o.nint((xs + msub) / dsub), 0, 3)
    L = o.where(dsub != 0, Lq, L)
    Lb = o.rows(L).reshape(-1, 256)
    return o.cat([o.u8(packed), _pack_2bit(o, Lb), o.fp16_bytes(d), o.fp16_bytes(dmin)], axis=1)


def _pack_scales_q3(o, l):
    """16 six-bit scales ``(nsb, 16)`` (already +32) -> the 12-byte Q3_K layout."""
    l = o.i32(l)
    low = (l[:, :8] & 15) | ((l[:, 8:] & 15) << 4)
    h = l >> 4
    high = h[:, 0:4] | (h[:, 4:8] << 2) | (h[:, 8:12] << 4) | (h[:, 12:16] << 6)
    return o.u8(o.cat([low, high & 255], axis=1))


def encode_q3_k(o, x, qw=None):
    xs = o.cols(x, 16)
    if qw is None:
        scales, L = make_q3_quants(o, xs, 4)
        sc = per_superblock(scales, 16)
        max_scale, _ = o.maxabs0(sc.T)
        with o.errstate():
            iscale = o.div(-32.0, max_scale)
            # int8_t l = nearest_int(iscale*scale); l = MAX(-32, MIN(31, l)) + 32
            lq = o.clip(_i8(o, o.nint(iscale[:, None] * sc)), -32, 31) + 32
            d = o.div(1.0, iscale)
        nonzero = max_scale != 0
        lq = o.where(nonzero[:, None], lq, 0.0)
        d = o.where(nonzero, d, 0.0)
    else:
        sigma2 = superblock_sigma2(o, x, 2.0)
        xs, w = imatrix_weights(o, x, qw, sigma2, 16)
        sw = o.sum0(w)
        scales, L = make_qx_quants(o, xs, 4, w)
        d, Ls = make_qx_quants(o, o.cols(scales, 16), 32, o.cols(sw, 16))
        lq = o.rows(Ls)
    d16 = o.fp16(d)
    dsub = (d16[:, None] * (lq - 32.0)).reshape(-1)
    with o.errstate():
        Lq = o.clip(o.nint(xs / dsub), -4, 3) + 4
    L = o.i32(o.where(dsub != 0, Lq, L))
    Lb = o.rows(L).reshape(-1, 8, 32)
    hbit = (Lb >> 2) & 1
    hmask = hbit[:, 0]
    for b in range(1, 8):
        hmask = hmask | (hbit[:, b] << b)
    qs = _pack_2bit(o, Lb.reshape(-1, 256))
    return o.cat([o.u8(hmask), qs, _pack_scales_q3(o, lq), o.fp16_bytes(d)], axis=1)
