"""The lazy tensor store interface shared by every input format.

A :class:`TensorStore` lists tensor names, shapes and dtypes from headers alone
(:meth:`TensorStore.infos`) and reads one tensor at a time (:meth:`TensorStore.read`).
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vqtool.errors import CorruptFileError, TensorNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    import torch

# Canonical dtype names (the safetensors spelling) and their sizes in bytes.
DTYPE_SIZES: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}

FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})


def torch_dtype(name: str) -> "torch.dtype":
    """The torch dtype for a canonical dtype name (``"BF16"`` -> ``torch.bfloat16``)."""
    import torch

    table = {
        "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
        "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
        "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
        "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool,
    }
    return table[name]


def dtype_name(dtype: "torch.dtype") -> str:
    """The canonical dtype name of a torch dtype (``torch.float8_e4m3fn`` -> ``"F8_E4M3"``)."""
    import torch

    table = {
        torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
        torch.float8_e4m3fn: "F8_E4M3", torch.float8_e5m2: "F8_E5M2",
        torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
        torch.uint64: "U64", torch.uint32: "U32", torch.uint16: "U16", torch.uint8: "U8", torch.bool: "BOOL",
    }
    try:
        return table[dtype]
    except KeyError:
        raise CorruptFileError(f"unsupported tensor dtype {dtype}") from None


@dataclass(frozen=True)
class TensorInfo:
    """What a header says about one tensor; no data is read to build it.

    ``dtype`` is a canonical name (``"F32"``, ``"BF16"``, ``"F8_E4M3"`` ...) or, for
    quantized GGUF tensors, the GGML type name (``"Q4_K"``), also kept in ``ggml_type``.
    ``shape`` is in torch order (outermost first).
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    file: str
    nbytes: int
    ggml_type: str | None = None

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


class TensorStore(ABC):
    """A set of named tensors from one model component, read lazily.

    Subclasses fill ``_infos`` from headers when opened and implement :meth:`_read`.
    ``metadata`` holds the file's own key/values (safetensors ``__metadata__``, GGUF KV);
    ``config`` the ``config.json`` of a Diffusers folder, when there is one.
    """

    def __init__(self, path: str | os.PathLike, format: str) -> None:
        self.path = os.fspath(path)
        self.format = format
        self.metadata: dict[str, Any] = {}
        self.config: dict[str, Any] | None = None
        self._infos: dict[str, TensorInfo] = {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.format} {self.path!r} tensors={len(self._infos)}>"

    def infos(self) -> dict[str, TensorInfo]:
        """Name -> :class:`TensorInfo`, in file order, from headers only."""
        return self._infos

    def info(self, name: str) -> TensorInfo:
        try:
            return self._infos[name]
        except KeyError:
            raise TensorNotFoundError(
                "no such tensor; run `vqtool inspect` to list the names", path=self.path, tensor=name
            ) from None

    def keys(self) -> list[str]:
        return list(self._infos)

    def __contains__(self, name: object) -> bool:
        return name in self._infos

    def __len__(self) -> int:
        return len(self._infos)

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    @property
    def files(self) -> list[str]:
        """The files this store reads, in order of first use."""
        return list(dict.fromkeys(i.file for i in self._infos.values())) or [self.path]

    def read(self, name: str) -> "torch.Tensor":
        """One tensor, on the CPU, in its source dtype (quantized GGUF: dequantized float32)."""
        info = self.info(name)
        return self._read(info)

    def iter_tensors(self) -> Iterator[tuple[str, "torch.Tensor"]]:
        """Yield ``(name, tensor)`` one at a time, in file order."""
        for name in self._infos:
            yield name, self.read(name)

    @abstractmethod
    def _read(self, info: TensorInfo) -> "torch.Tensor": ...

    def close(self) -> None:
        """Release file handles and maps. Reading after close is an error."""

    def __enter__(self) -> "TensorStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_size(path: str | os.PathLike) -> int:
    return os.stat(path).st_size
