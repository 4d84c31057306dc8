"""Write videos as MP4 through PyAV (H.264 when FFmpeg has libx264), and build comparison frames.

H.264 needs even width and height (yuv420p), so odd sizes are padded by one row/column of
edge pixels. Files are written under a temporary name in the target folder and renamed when
complete. When PyAV's FFmpeg has no H.264 encoder, MPEG-4 Part 2 is used instead and the
codec actually used is returned, so the report can say so.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vqtool.errors import InputError
from vqtool.validate.files import atomic_path

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

log = logging.getLogger(__name__)

# Encoders in order of preference (name, options); CRF 12 keeps 8-bit frames close to lossless.
CODECS = (("libx264", {"crf": "12", "preset": "medium"}), ("libopenh264", {}), ("mpeg4", {"qscale": "2"}))
DIFF_GAIN = 10.0  # |reference - candidate| x 10 in the third panel of comparison videos


def to_uint8(frames) -> "np.ndarray":
    """Float frames in [0, 1] -> uint8 ``[T, H, W, 3]`` (rounded, clipped)."""
    import numpy as np

    return (np.clip(np.asarray(frames, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def pick_codec() -> tuple[str, dict[str, str]]:
    """The first encoder of ``CODECS`` this PyAV build has."""
    import av

    available = av.codecs_available
    for name, options in CODECS:
        if name in available:
            try:
                av.codec.Codec(name, "w")
            except Exception:  # listed but not usable as an encoder
                continue
            return name, options
    raise InputError("PyAV's FFmpeg has none of the video encoders libx264, libopenh264, mpeg4")


def write_mp4(frames, path: str, fps: int = 16) -> str:
    """Write ``frames`` (float in [0, 1] or uint8, ``[T, H, W, 3]``) to ``path``; returns the codec used."""
    import av
    import numpy as np

    data = frames if getattr(frames, "dtype", None) == np.uint8 else to_uint8(frames)
    t, h, w, _ = data.shape
    if h % 2 or w % 2:
        data = np.pad(data, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    codec, options = pick_codec()
    with atomic_path(path, ".mp4") as tmp:
        with av.open(tmp, "w", format="mp4") as container:
            stream = container.add_stream(codec, rate=int(fps), options=options)
            stream.width, stream.height = data.shape[2], data.shape[1]
            stream.pix_fmt = "yuv420p"
            for frame in data:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return codec


def read_video(path: str) -> "np.ndarray":
    """Decode an MP4 back to uint8 ``[T, H, W, 3]`` (for tests and checks)."""
    import av
    import numpy as np

    with av.open(path) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack(frames) if frames else np.zeros((0, 0, 0, 3), np.uint8)


def side_by_side(reference, candidate, gain: float = DIFF_GAIN, gap: int = 2) -> "np.ndarray":
    """Frames ``reference | candidate | |difference| x gain`` (float in [0, 1]), white gaps between."""
    import numpy as np

    ref = np.asarray(reference, dtype=np.float32)
    cand = np.asarray(candidate, dtype=np.float32)
    diff = np.clip(np.abs(ref - cand) * gain, 0.0, 1.0)
    sep = np.ones(ref.shape[:2] + (gap, 3), dtype=np.float32)
    return np.concatenate([ref, sep, cand, sep, diff], axis=2)
