"""The scale searches of ``ggml-quants.c``, vectorized over sub-blocks.

Each function takes sub-blocks as columns, shape ``(n, S)`` (``n`` elements per
sub-block, ``S`` sub-blocks), and returns one scale per column plus the chosen
levels ``L`` (float32 holding small integers) of shape ``(n, S)``. The loops over
candidate scales and over elements stay Python loops, because C evaluates them in
that order (sums left to right, coordinate descent element by element); every
statement inside works on all sub-blocks at once.

The C function each one reproduces is named in its docstring (ggml snapshot d99724f).
"""

from __future__ import annotations

from vqtool.ggml.ops import f32_add, f32_mul, f32c

GROUP_MAX_EPS = f32c(1e-15)


def make_qx_quants(o, x, nmax: int, w):
    """Symmetric search ``make_qx_quants(n, nmax, x, L, rmse_type=1, qw)``.

    ``w`` are the weights (``x*x`` for rmse_type 1 without ``qw``). Returns
    ``(scale, L)`` with ``L`` in ``[0, 2*nmax)``; all-zero sub-blocks get scale 0 and
    ``L = 0`` (not ``nmax``), as in C.
    """
    vmax, amax = o.maxabs0(x)
    zero = amax < GROUP_MAX_EPS
    wx = w * x
    with o.errstate():
        iscale = o.div(f32c(-nmax), vmax)
        L = o.clip(o.rint(iscale * x), -nmax, nmax - 1)
        sumlx = o.dot0(wx, L)
        suml2 = o.dot0(w * L, L)
        scale = o.where(suml2 != 0, sumlx / suml2, 0.0)
        best = scale * sumlx
        # C recomputes L whenever a candidate wins; keeping the winning iscale and
        # rounding once at the end gives the same levels with less work.
        best_iscale = iscale
        for step in range(-9, 10):
            if step == 0:
                continue
            iscale = o.div(-f32_add(nmax, f32_mul(0.1, step)), vmax)
            Lc = o.clip(o.rint(iscale * x), -nmax, nmax - 1)
            slx = o.dot0(wx, Lc)
            sl2 = o.dot0(w * Lc, Lc)
            take = (sl2 > 0) & (slx * slx > best * sl2)
            best_iscale = o.where(take, iscale, best_iscale)
            scale = o.where(take, slx / sl2, scale)
            best = o.where(take, scale * slx, best)
        L = o.clip(o.rint(best_iscale * x), -nmax, nmax - 1)
    L = o.where(zero, 0.0, L + nmax)
    return o.where(zero, 0.0, scale), L


def make_q3_quants(o, x, nmax: int):
    """``make_q3_quants(n, nmax, x, L, do_rmse=true)``: weights ``x*x``, then up to five
    coordinate-descent sweeps. Returns ``(scale, L)`` with ``L`` in ``[0, 2*nmax)``
    (all-zero sub-blocks: scale 0, ``L = 0``)."""
    vmax, amax = o.maxabs0(x)
    zero = amax < GROUP_MAX_EPS
    w = x * x
    wx = w * x
    n = x.shape[0]
    with o.errstate():
        iscale = o.div(f32c(-nmax), vmax)
        L = o.clip(o.rint(iscale * x), -nmax, nmax - 1)
        sumlx = o.dot0(wx, L)
        suml2 = o.dot0(w * L, L)
        Lr = [L[i] for i in range(n)]
        # A sweep that changes nothing leaves the state unchanged, so running all five
        # sweeps gives the same result as C's early exit.
        for _ in range(5):
            for i in range(n):
                Li, wi, wxi = Lr[i], w[i], wx[i]
                slx = sumlx - wxi * Li
                sl2 = suml2 - wi * Li * Li
                new_l = o.clip(o.nint(x[i] * sl2 / slx), -nmax, nmax - 1)
                slx_n = slx + wxi * new_l
                sl2_n = sl2 + wi * new_l * new_l
                take = ((slx > 0) & (new_l != Li) & (sl2_n > 0)
                        & (slx_n * slx_n * suml2 > sumlx * sumlx * sl2_n))
                Lr[i] = o.where(take, new_l, Li)
                sumlx = o.where(take, slx_n, sumlx)
                suml2 = o.where(take, sl2_n, suml2)
        scale = sumlx / suml2
    L = _stack(o, Lr)
    return o.where(zero, 0.0, scale), o.where(zero, 0.0, L + nmax)


def make_qkx_quants(o, x, w, nmax: int, rmin: float, rdelta: float, nstep: int, use_mad: bool):
    """Asymmetric search ``make_qkx2_quants`` / ``make_qkx3_quants`` with explicit weights.

    The two C functions are identical when weights are given (their degenerate tests
    ``max == min`` and ``max <= min`` agree once ``min`` is clamped to <= 0). As in C,
    an accepted candidate overwrites ``min``, which later candidates then use.
    Returns ``(scale, the_min, L)`` with ``the_min = -min >= 0`` and ``L`` in ``[0, nmax]``.
    """
    vmin = o.min0(x)
    vmax = o.max0(x)
    sum_w = o.sum0(w)
    sum_x = o.dot0(w, x)
    vmin = o.where(vmin > 0, 0.0, vmin)
    flat = vmax == vmin

    def error(diff):
        return o.abs(diff) if use_mad else diff * diff

    with o.errstate():
        iscale = o.div(f32c(nmax), vmax - vmin)
        scale = o.div(1.0, iscale)
        iscale = _finite_or_zero(o, iscale)
        L = o.clip(o.rint(iscale * (x - vmin)), 0, nmax)
        best = o.dot0(w, error(scale * L + vmin - x))
        # The winning levels are rebuilt once at the end from the winning step's
        # iscale and the min it was computed with: the same arithmetic C does.
        L_iscale, L_vmin = iscale, vmin
        for step in range(nstep + 1):
            num = f32_add(f32_add(rmin, f32_mul(rdelta, step)), nmax)
            iscale = _finite_or_zero(o, o.div(num, vmax - vmin))
            La = o.clip(o.rint(iscale * (x - vmin)), 0, nmax)
            wl = w * La
            sum_l = o.sum0(wl)
            sum_l2 = o.dot0(wl, La)
            sum_xl = o.dot0(wl, x)
            D = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            pos = this_min > 0
            this_scale = o.where(pos, sum_xl / sum_l2, this_scale)
            this_min = o.where(pos, 0.0, this_min)
            mad = o.dot0(w, error(this_scale * La + this_min - x))
            take = (D > 0) & (mad < best)
            L_iscale = o.where(take, iscale, L_iscale)
            L_vmin = o.where(take, vmin, L_vmin)
            best = o.where(take, mad, best)
            scale = o.where(take, this_scale, scale)
            vmin = o.where(take, this_min, vmin)
        L = o.clip(o.rint(L_iscale * (x - L_vmin)), 0, nmax)
    return o.where(flat, 0.0, scale), -vmin, o.where(flat, 0.0, L)


def make_qp_quants(o, x, nmax: int, qw):
    """``make_qp_quants(n, nmax, x, L, quant_weights)``: quantize non-negative
    sub-block scales (or mins) with weights ``qw``. Returns ``(scale, L)``.

    ``L`` is a ``uint8_t`` array in C, so stored levels wrap modulo 256 (only reachable
    with negative inputs, which the K-quant searches practically never produce).
    """
    vmax = o.maximum(o.max0(x), 0.0)
    zero = vmax < GROUP_MAX_EPS
    n = x.shape[0]
    with o.errstate():
        iscale = o.div(f32c(nmax), vmax)
        L0 = _wrap_u8(o, o.nint(iscale * x))
        scale = o.div(1.0, iscale)
        diff = x - scale * L0
        best = o.dot0(qw * diff, diff)
        for step in range(-4, 5):
            if step == 0:
                continue
            is_ = o.div(f32_add(f32_mul(0.1, step), nmax), vmax)
            sc = o.div(1.0, is_)
            lq = o.minimum(o.nint(is_ * x), nmax)
            diff = x - sc * lq
            mse = o.dot0(qw * diff, diff)
            take = mse < best
            best = o.where(take, mse, best)
            iscale = o.where(take, is_, iscale)
        lq = o.minimum(o.nint(iscale * x), nmax)
        wx = qw * x
        sumlx = o.dot0(wx, lq)
        suml2 = o.dot0(qw * lq, lq)
        Lr = [_wrap_u8(o, lq[i]) for i in range(n)]
        for _ in range(5):
            for i in range(n):
                Li, wi, wxi = Lr[i], qw[i], wx[i]
                slx = sumlx - wxi * Li
                sl2 = suml2 - wi * Li * Li
                new_l = o.minimum(o.nint(x[i] * sl2 / slx), nmax)
                slx_n = slx + wxi * new_l
                sl2_n = sl2 + wi * new_l * new_l
                take = ((slx > 0) & (sl2 > 0) & (new_l != Li)
                        & (slx_n * slx_n * suml2 > sumlx * sumlx * sl2_n))
                Lr[i] = o.where(take, _wrap_u8(o, new_l), Li)
                sumlx = o.where(take, slx_n, sumlx)
                suml2 = o.where(take, sl2_n, suml2)
        result = sumlx / suml2
    L = _stack(o, Lr)
    return o.where(zero, 0.0, result), o.where(zero, 0.0, L)


def _finite_or_zero(o, iscale):
    """An ``iscale`` that overflowed (a range below ~1e-38) as 0.

    In C, ``nearest_int(inf * (x - min))`` is -4194304 (or 0 for ``inf * 0``), which the
    clamp turns into level 0 for every element; ``rint`` would give ``inf`` instead.
    With ``iscale = 0`` the levels are 0 as in C. Finite ``iscale`` values keep
    ``|iscale * (x - min)|`` below ``nmax + 2``, where ``rint`` equals ``nearest_int``.
    """
    return o.where(o.abs(iscale) < float("inf"), iscale, 0.0)


def _wrap_u8(o, a):
    """Float-held integers stored into ``uint8_t``: modulo 256."""
    return a - 256.0 * o.floor(a * (1.0 / 256.0))


def _stack(o, rows):
    return o.cat([r[None] for r in rows], axis=0)
