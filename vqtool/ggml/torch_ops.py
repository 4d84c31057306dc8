"""The codec primitives on torch, for any device (CUDA, or the CPU for tests).

Same contract as :class:`vqtool.ggml.ops.NumpyOps`, so every codec runs unchanged.
What keeps the bytes equal to ggml's on a GPU:

* sums along axis 0 are an explicit left-to-right loop of elementwise adds (a
  ``torch.sum`` is tree-shaped and gives other roundings), or on an accelerator a
  ``cumsum`` once it has been checked to add in that order (:func:`_scan_is_sequential`);
* divisions go through :meth:`TorchOps.div` with tensor operands: torch computes
  ``scalar / tensor`` as ``reciprocal * scalar`` and, on CUDA, ``tensor / cpu_scalar``
  as a multiplication by the reciprocal, each rounding twice;
* the code runs in eager mode (no ``torch.compile``: fused kernels may contract
  ``a*b+c`` into an FMA); elementwise float32 ``+ - *`` and division are IEEE-rounded
  on CPU and CUDA, while ``sqrt`` is taken in float64 and rounded (torch's CPU float32
  sqrt is not correctly rounded).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from vqtool.errors import NonFiniteError, VqtoolError

_MAGIC = 12582912.0


class TorchOps:
    """torch implementation of the codec primitives on one device."""

    name = "torch"

    def __init__(self, device) -> None:
        self.device = torch.device(device)
        self.scan_sums = _scan_is_sequential(self.device)

    @staticmethod
    def to_numpy(a) -> np.ndarray:
        if isinstance(a, torch.Tensor):
            return a.detach().to("cpu").numpy()
        return np.asarray(a)

    @staticmethod
    def f32(a):
        return a.to(torch.float32)

    @staticmethod
    def i32(a):
        return a.to(torch.int32)

    @staticmethod
    def u8(a):
        return a.to(torch.int32).bitwise_and(255).to(torch.uint8)

    @staticmethod
    def cols(a, n: int):
        return a.reshape(-1, n).T.contiguous()

    @staticmethod
    def rows(a):
        return a.T.contiguous()

    @staticmethod
    def bcast(a, shape):
        return a.expand(tuple(shape))

    @staticmethod
    def cat(parts, axis=1):
        return torch.cat(list(parts), dim=axis)

    @staticmethod
    def u16_bytes(a):
        v = a.to(torch.int32)
        return torch.stack([v & 255, (v >> 8) & 255], dim=1).to(torch.uint8)

    def fp16_bytes(self, a):
        return self.u16_bytes(a.to(torch.float16).view(torch.int16).to(torch.int32) & 0xFFFF)

    @staticmethod
    def fp16(a):
        return a.to(torch.float16).to(torch.float32)

    @staticmethod
    def nint(a):
        bits = (a + _MAGIC).view(torch.int32)
        return ((bits & 0x007FFFFF) - 0x00400000).to(torch.float32)

    @staticmethod
    def rint(a):
        return torch.round(a)  # half to even

    @staticmethod
    def trunc(a):
        return torch.trunc(a)

    @staticmethod
    def floor(a):
        return torch.floor(a)

    @staticmethod
    def sign(a):
        return torch.sign(a)

    @staticmethod
    def clip(a, lo, hi):
        return torch.clamp(a, lo, hi)

    @staticmethod
    def minimum(a, b):
        return torch.clamp(a, max=b) if not isinstance(b, torch.Tensor) else torch.minimum(a, b)

    @staticmethod
    def maximum(a, b):
        return torch.clamp(a, min=b) if not isinstance(b, torch.Tensor) else torch.maximum(a, b)

    @staticmethod
    def where(c, a, b):
        return torch.where(c, a, b)

    def div(self, a, b):
        if not isinstance(a, torch.Tensor):
            a = torch.tensor(a, dtype=torch.float32, device=b.device)
        if not isinstance(b, torch.Tensor):
            b = torch.tensor(b, dtype=torch.float32, device=a.device)
        return torch.div(a, b)

    @staticmethod
    def select(take, new, old):
        return old + (new - old) * take.to(torch.float32)

    @staticmethod
    def abs(a):
        return torch.abs(a)

    @staticmethod
    def sqrt(a):
        # torch's vectorized float32 sqrt on CPU (AVX-512 build) is off by one ulp for
        # about 17% of inputs; a float64 sqrt rounded to float32 is the correctly
        # rounded sqrtf (53 >= 2*24 + 2, so the double rounding is harmless).
        return torch.sqrt(a.to(torch.float64)).to(torch.float32)

    def sum0(self, a):
        if self.scan_sums:
            return torch.cumsum(a, dim=0)[-1] + 0.0
        return loop_sum0(a)

    def dot0(self, a, b):
        return self.sum0(a * b)

    @staticmethod
    def max0(a):
        return torch.gather(a, 0, a.argmax(dim=0, keepdim=True))[0]

    @staticmethod
    def min0(a):
        return torch.gather(a, 0, a.argmin(dim=0, keepdim=True))[0]

    @staticmethod
    def maxabs0(a):
        ab = a.abs()
        idx = ab.argmax(dim=0, keepdim=True)
        amax = torch.gather(ab, 0, idx)[0]
        val = torch.gather(a, 0, idx)[0]
        return torch.where(amax > 0, val, torch.zeros_like(val)), amax

    @staticmethod
    def count_ge(a, thresholds):
        idx = torch.full(a.shape, len(thresholds), dtype=torch.int32, device=a.device)
        for t in thresholds:
            idx -= (a < t).to(torch.int32)
        return idx

    @staticmethod
    def take(values, idx):
        return values[idx.long()]

    def constant(self, values, like=None):
        device = like.device if isinstance(like, torch.Tensor) else self.device
        return torch.tensor(values, dtype=torch.float32, device=device)

    @staticmethod
    def errstate():
        return contextlib.nullcontext()


def loop_sum0(a):
    """Left-to-right float32 sum over dim 0, one elementwise add per row."""
    acc = a[0] + 0.0  # C starts from +0: 0 + (-0) is +0
    for i in range(1, a.shape[0]):
        acc = acc + a[i]
    return acc


_scan_checked: dict[str, bool] = {}


def _scan_is_sequential(device: torch.device) -> bool:
    """Whether ``cumsum`` over dim 0 adds in float32, left to right, on ``device``.

    CUDA scans a non-innermost dimension with one thread per column looping over the
    rows, which is C's order; that replaces n kernel launches per sum by one. It is
    used only after it reproduces the loop bit for bit on data where the order
    matters (the CPU kernel accumulates in double, so it never qualifies).
    """
    if device.type == "cpu":
        return False
    key = str(device)
    if key not in _scan_checked:
        _scan_checked[key] = scan_matches_loop(device)
    return _scan_checked[key]


def scan_matches_loop(device) -> bool:
    """Probe: ``cumsum(dim=0)[-1]`` equals :func:`loop_sum0` on magnitudes spanning 1e+-20."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(256, 4096, generator=gen) * torch.exp(torch.randn(256, 1, generator=gen) * 8)
    a = a.to(device)
    return bool(torch.equal(torch.cumsum(a, dim=0)[-1] + 0.0, loop_sum0(a)))


# Bigger chunks on accelerators, where each op costs a kernel launch.
CHUNK_ELEMENTS = {"cpu": 1 << 18}
DEFAULT_CHUNK = 1 << 24


def quantize_torch(c, x, qw, device, name: str | None, limit: float | None = None) -> np.ndarray:
    """Encode with ``TorchOps`` on ``device``; ``x`` is a 2-D tensor or array.

    ``limit``: largest allowed ``|x|`` (see :data:`vqtool.ggml.api.MAX_ABS_VALUE`).
    """
    ops = TorchOps(device)
    with torch.no_grad():
        t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
        t = t.to(device=ops.device, dtype=torch.float32).contiguous()
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            rows_ok = finite.all(dim=1)
            row = int(torch.argmin(rows_ok.to(torch.int32)))
            col = int(torch.argmin(finite[row].to(torch.int32)))
            raise NonFiniteError(
                f"tensor has a non-finite value ({float(t[row, col])}) in row {row}, column {col}; "
                "fix the source weights before quantizing",
                tensor=name or "<unnamed>",
            )
        top = float(t.abs().max()) if t.numel() else 0.0
        if limit is not None and top > limit:
            row = int(torch.argmax(t.abs().max(dim=1).values))
            raise VqtoolError(
                f"tensor has a value of magnitude {top:.3g} in row {row}; quantized types need "
                f"|x| <= {limit:.3g} (ggml's float32 arithmetic overflows and its fp16 scales become inf)",
                tensor=name or "<unnamed>",
            )
        w = None if qw is None else torch.from_numpy(qw).to(ops.device)
        rows, n_per_row = t.shape
        row_bytes = c.row_size(n_per_row)
        chunk = CHUNK_ELEMENTS.get(ops.device.type, DEFAULT_CHUNK)
        step = max(1, chunk // n_per_row)
        out = np.empty((rows, row_bytes), dtype=np.uint8)
        for a in range(0, rows, step):
            b = min(rows, a + step)
            out[a:b] = ops.to_numpy(c.encode(ops, t[a:b], w)).reshape(b - a, row_bytes)
        return out
