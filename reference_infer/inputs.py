"""Prompts and conditioning inputs: the built-in prompt set, files, and synthetic I2V/VACE inputs.

The synthetic inputs are deterministic pictures drawn with numpy (no data files, no network):
a gradient with shapes for I2V, a square moving over a gradient for a VACE control video, and
a mask that asks the model to generate a centre rectangle and keep the border.
"""

from __future__ import annotations

import os

from vqtool.errors import InputError

# Short, varied scenes (motion, texture, people, text-free); the set validate uses by default.
BUILTIN_PROMPTS: tuple[str, ...] = (
    "a cat runs across a sunny garden, the camera follows it",
    "waves crash on a rocky shore at sunset, slow motion",
    "a busy city street at night with neon signs and rain",
    "a close-up of a person smiling and turning their head",
)


def read_prompts(path: str) -> list[str]:
    """Prompts from a text file: one a line; blank lines and lines starting with ``#`` are skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            prompts = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    except OSError as exc:
        raise InputError(f"cannot read prompts: {exc.strerror}", path=path) from None
    if not prompts:
        raise InputError("the prompts file holds no prompt (one a line, # for comments)", path=path)
    return prompts


def _gradient(width: int, height: int, phase: float = 0.0):
    import numpy as np

    y, x = np.mgrid[0:height, 0:width].astype("float32")
    r = 0.5 + 0.5 * np.sin(2 * np.pi * (x / max(width, 1) + phase))
    g = y / max(height - 1, 1)
    b = 0.5 + 0.5 * np.cos(2 * np.pi * (x + y) / max(width + height, 1))
    return np.stack([r, g, b], axis=-1)


def _to_image(array):
    import numpy as np
    from PIL import Image

    return Image.fromarray((np.clip(array, 0, 1) * 255).round().astype("uint8"))


def synthetic_image(width: int, height: int):
    """A deterministic RGB test picture: a gradient with a dark disc and a light bar."""
    import numpy as np

    img = _gradient(width, height)
    y, x = np.mgrid[0:height, 0:width]
    disc = (x - width * 0.35) ** 2 + (y - height * 0.45) ** 2 < (min(width, height) * 0.2) ** 2
    img[disc] = [0.1, 0.1, 0.2]
    img[int(height * 0.75):int(height * 0.85), int(width * 0.2):int(width * 0.8)] = [0.95, 0.9, 0.8]
    return _to_image(img)


def synthetic_control_video(frames: int, width: int, height: int) -> list:
    """A square sliding left to right over a slowly shifting gradient, ``frames`` PIL frames."""
    out = []
    side = max(2, min(width, height) // 4)
    for i in range(frames):
        img = _gradient(width, height, phase=i / max(frames, 1) * 0.25)
        x0 = int((width - side) * i / max(frames - 1, 1))
        y0 = (height - side) // 2
        img[y0:y0 + side, x0:x0 + side] = [0.9, 0.2, 0.2]
        out.append(_to_image(img))
    return out


def synthetic_mask(frames: int, width: int, height: int) -> list:
    """VACE masks: white (generate) in the centre half, black (keep the control video) around it."""
    import numpy as np
    from PIL import Image

    m = np.zeros((height, width), dtype="uint8")
    m[height // 4: height - height // 4, width // 4: width - width // 4] = 255
    return [Image.fromarray(m, mode="L") for _ in range(frames)]


def load_image(path: str):
    """An RGB PIL image from a file."""
    from PIL import Image, UnidentifiedImageError

    if not os.path.isfile(path):
        raise InputError("no such image file", path=path)
    try:
        return Image.open(path).convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError(f"cannot read this image ({exc})", path=path) from None


def load_frames(path: str, mode: str = "RGB") -> list:
    """PIL frames of a video file (PyAV) or of a single image (a static clip of one frame)."""
    import av

    if not os.path.isfile(path):
        raise InputError("no such video or image file", path=path)
    try:
        with av.open(path) as container:
            frames = [f.to_image().convert(mode) for f in container.decode(video=0)]
    except (av.error.FFmpegError, IndexError) as exc:
        raise InputError(f"cannot decode this video ({exc})", path=path) from None
    if not frames:
        raise InputError("the video holds no frames", path=path)
    return frames


def fit_frames(frames: list, count: int) -> list:
    """``frames`` cut or padded (repeating the last) to ``count`` frames."""
    return (list(frames) + [frames[-1]] * count)[:count]
