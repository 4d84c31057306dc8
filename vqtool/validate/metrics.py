"""Video and latent quality metrics: PSNR, SSIM, temporal flicker, latent relative error.

Frames are float arrays ``[T, H, W, 3]`` with values in [0, 1] (what the pipelines return
before 8-bit encoding). Every function is deterministic and works on CPU with numpy/torch;
no metric needs a network or downloaded weights.

PSNR of identical frames is ``inf``; :func:`json_number` writes it as the string ``"inf"``
so that report.json stays strict JSON.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

# SSIM constants of Wang et al. 2004 (dynamic range L = 1): Gaussian window 11, sigma 1.5.
SSIM_K1, SSIM_K2, SSIM_WINDOW, SSIM_SIGMA = 0.01, 0.03, 11, 1.5


def np_writable(x):
    """``x``, copied if it is a read-only numpy array (a memory-mapped reference): torch wants writable memory."""
    if getattr(x, "flags", None) is not None and not x.flags.writeable:
        return x.copy()
    return x


def _frames(x) -> "torch.Tensor":
    import torch

    t = torch.as_tensor(np_writable(x))
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"expected frames [T, H, W, 3], got shape {tuple(t.shape)}")
    return t.to(torch.float64)


def _same_shape(a, b) -> tuple["torch.Tensor", "torch.Tensor"]:
    a, b = _frames(a), _frames(b)
    if a.shape != b.shape:
        raise ValueError(f"frame shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    return a, b


def psnr_from_mse(mse: float) -> float:
    """Peak signal-to-noise ratio in dB for signals in [0, 1]; ``inf`` when ``mse`` is 0."""
    return math.inf if mse <= 0 else -10.0 * math.log10(mse)


def psnr_per_frame(a, b) -> list[float]:
    """PSNR (dB) of each frame pair."""
    a, b = _same_shape(a, b)
    mse = (a - b).pow(2).mean(dim=(1, 2, 3))
    return [psnr_from_mse(float(m)) for m in mse]


def psnr(a, b) -> float:
    """PSNR (dB) of the whole video: from the mean squared error over every frame and pixel."""
    a, b = _same_shape(a, b)
    return psnr_from_mse(float((a - b).pow(2).mean()))


def _gaussian_window(size: int, sigma: float) -> "torch.Tensor":
    import torch

    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_per_frame(a, b, *, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> list[float]:
    """SSIM of each frame pair: the mean SSIM map over valid positions, averaged over R, G, B.

    Gaussian-weighted local statistics (separable 11-tap window, sigma 1.5), C1 = (0.01)^2 and
    C2 = (0.03)^2 for a dynamic range of 1 (Wang, Bovik, Sheikh, Simoncelli 2004). Frames smaller
    than the window use a window as large as the smaller side allows (odd).
    """
    import torch
    import torch.nn.functional as F

    a, b = _same_shape(a, b)
    t, h, w, c = a.shape
    size = min(window, h if h % 2 else h - 1, w if w % 2 else w - 1)
    if size < 1:
        raise ValueError(f"frames of {h}x{w} are too small for SSIM")
    g = _gaussian_window(size, sigma)
    kh = g.view(1, 1, size, 1).expand(c, 1, size, 1)
    kw = g.view(1, 1, 1, size).expand(c, 1, 1, size)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, kh, groups=c), kw, groups=c)

    x = a.permute(0, 3, 1, 2)
    y = b.permute(0, 3, 1, 2)
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    smap = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return [float(v) for v in smap.mean(dim=(1, 2, 3))]


def ssim(a, b) -> float:
    """Mean SSIM over the frames of a video."""
    values = ssim_per_frame(a, b)
    return sum(values) / len(values)


def flicker_per_frame(frames) -> list[float]:
    """Temporal flicker: mean absolute difference between each frame and the next (``T - 1`` values)."""
    x = _frames(frames)
    if x.shape[0] < 2:
        return []
    return [float(v) for v in (x[1:] - x[:-1]).abs().mean(dim=(1, 2, 3))]


def flicker(frames) -> float:
    """Mean temporal flicker of a video (0 for a single frame)."""
    values = flicker_per_frame(frames)
    return sum(values) / len(values) if values else 0.0


def relative_error(reference, candidate) -> float:
    """``||candidate - reference|| / ||reference||`` (L2 over all elements); 0 when both are zero."""
    import torch

    r = torch.as_tensor(np_writable(reference)).to(torch.float64)
    c = torch.as_tensor(np_writable(candidate)).to(torch.float64)
    if r.shape != c.shape:
        raise ValueError(f"shapes differ: {tuple(r.shape)} vs {tuple(c.shape)}")
    num = float((c - r).pow(2).sum().sqrt())
    den = float(r.pow(2).sum().sqrt())
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return num / den


def latent_errors(reference: list, candidate: list) -> list[float]:
    """Relative error of the latents after each sampling step."""
    if len(reference) != len(candidate):
        raise ValueError(f"step counts differ: {len(reference)} vs {len(candidate)}")
    return [relative_error(r, c) for r, c in zip(reference, candidate)]


def max_abs_diff(a, b) -> float:
    a, b = _same_shape(a, b)
    return float((a - b).abs().max()) if a.numel() else 0.0


def json_number(value: float | None) -> float | str | None:
    """A float for strict JSON: ``inf``/``-inf``/``nan`` become strings, others are rounded to 6 digits."""
    if value is None:
        return None
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return round(float(value), 6)


def from_json_number(value) -> float | None:
    """Inverse of :func:`json_number`."""
    if value is None:
        return None
    return float(value)


def mean(values: list[float]) -> float | None:
    """Arithmetic mean (``inf`` if any value is ``inf``); ``None`` for no values."""
    return sum(values) / len(values) if values else None
