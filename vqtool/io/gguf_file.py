"""GGUF files, read through gguf-py's memory-mapped reader.

Quantized tensors stay raw (``read_raw``) until asked for; ``read`` dequantizes
them with gguf-py. Shapes are reported in torch order. A tensor whose logical shape
was reshaped for storage carries it in ``vqtool.orig_shape.<name>`` or ComfyUI-GGUF's
``comfy.gguf.orig_shape.<name>`` (INT32 array, torch order); that shape wins.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from vqtool.errors import CorruptFileError, InputError, TruncatedFileError
from vqtool.io.base import TensorInfo, TensorStore, file_size

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

ORIG_SHAPE_PREFIXES = ("vqtool.orig_shape.", "comfy.gguf.orig_shape.")
PLAIN_TYPES = {"F32": "F32", "F16": "F16", "BF16": "BF16", "F64": "F64", "I8": "I8", "I16": "I16", "I32": "I32", "I64": "I64"}


def field_value(field: Any) -> Any:
    """A GGUF KV field as a plain Python value (str, int, float, bool or list)."""
    return field.contents()


class GGUFFile(TensorStore):
    """One ``.gguf`` file (header parsed eagerly, tensor data memory-mapped)."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, "gguf")
        from gguf import GGUFReader

        size = file_size(self.path)
        with open(self.path, "rb") as f:
            magic = f.read(4)
        if magic != b"GGUF":
            if len(magic) < 4:
                raise TruncatedFileError(f"file is {size} bytes, too short to be GGUF", path=self.path)
            raise CorruptFileError(f"not a GGUF file (wrong magic {magic!r}, expected b'GGUF')", path=self.path)
        try:
            self._reader = GGUFReader(self.path, "r")
        except (ValueError, IndexError, OverflowError, KeyError, UnicodeDecodeError) as exc:
            raise TruncatedFileError(
                f"GGUF header or tensor table is cut short or damaged ({type(exc).__name__}: {exc}); re-download it",
                path=self.path,
            ) from None
        for name, fld in self._reader.fields.items():
            if not name.startswith("GGUF."):
                self.metadata[name] = field_value(fld)
        self._tensors = {}
        for t in self._reader.tensors:
            qtype = t.tensor_type.name
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))
            for prefix in ORIG_SHAPE_PREFIXES:
                if prefix + t.name in self.metadata:
                    shape = tuple(int(d) for d in self.metadata[prefix + t.name])
                    break
            end = t.data_offset + t.n_bytes
            if end > size or t.data.nbytes != t.n_bytes:
                raise TruncatedFileError(
                    f"file is truncated: tensor data ends at byte {end} but the file has {size}; re-download it",
                    path=self.path,
                    tensor=t.name,
                )
            dtype = PLAIN_TYPES.get(qtype, qtype)
            self._infos[t.name] = TensorInfo(
                name=t.name, shape=shape, dtype=dtype, file=self.path, nbytes=int(t.n_bytes),
                ggml_type=qtype,
            )
            self._tensors[t.name] = t

    def read_raw(self, name: str) -> "np.ndarray":
        """The tensor's stored bytes as a flat uint8 array (a copy), whatever its GGML type."""
        import numpy as np

        t = self._tensors[self.info(name).name]
        return np.frombuffer(t.data.tobytes(), dtype=np.uint8)

    def _read(self, info: TensorInfo) -> "torch.Tensor":
        import numpy as np
        import torch
        from gguf import GGMLQuantizationType
        from gguf.quants import dequantize

        t = self._tensors[info.name]
        qtype = t.tensor_type
        if qtype == GGMLQuantizationType.BF16:
            raw = np.frombuffer(t.data.tobytes(), dtype=np.uint16).copy()
            return torch.from_numpy(raw).view(torch.bfloat16).reshape(info.shape)
        if info.dtype in PLAIN_TYPES:
            return torch.from_numpy(np.array(t.data)).reshape(info.shape)
        try:
            values = dequantize(t.data, qtype)
        except NotImplementedError:
            raise InputError(f"gguf-py cannot dequantize GGML type {qtype.name}", path=self.path, tensor=info.name) from None
        return torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32)).reshape(info.shape)

    def close(self) -> None:
        self._tensors = {}
        self._reader = None
