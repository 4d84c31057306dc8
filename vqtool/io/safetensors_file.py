"""safetensors files, read header-first with our own validation.

The header is parsed and checked against the file size before any tensor is
touched, so a truncated file, a wrong magic or a header whose offsets contradict
its shapes each get their own message. Tensor data is read one tensor at a time
straight into a fresh buffer (``readinto``), never the whole file.
"""

from __future__ import annotations

import json
import math
import os
import struct
from typing import TYPE_CHECKING, Any

from vqtool.errors import CorruptFileError, HeaderMismatchError, InputError, TruncatedFileError
from vqtool.io.base import DTYPE_SIZES, TensorInfo, TensorStore, file_size, torch_dtype

if TYPE_CHECKING:  # pragma: no cover
    import torch

MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors crate's own limit


def read_header(path: str) -> tuple[dict[str, Any], int, int]:
    """Parse and validate a safetensors header.

    Returns ``(header_dict, data_start, data_size)``. Raises :class:`CorruptFileError`
    (wrong magic, bad JSON), :class:`TruncatedFileError` or :class:`HeaderMismatchError`.
    """
    size = file_size(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise TruncatedFileError(
                    f"file is {size} bytes; a safetensors file starts with an 8-byte header length", path=path
                )
            (n,) = struct.unpack("<Q", head)
            first = f.read(1)
            if first != b"{" or n > MAX_HEADER_BYTES:
                raise CorruptFileError(
                    "not a safetensors file (wrong magic: no JSON header after the 8-byte length); "
                    "check the file type or re-download it",
                    path=path,
                )
            if 8 + n > size:
                raise TruncatedFileError(
                    f"file is truncated: header needs {8 + n} bytes but the file has {size}; re-download or re-export it",
                    path=path,
                )
            raw = first + f.read(n - 1)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", path=path) from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"safetensors header is not valid JSON ({exc}); the file is damaged", path=path) from None
    if not isinstance(header, dict):
        raise CorruptFileError("safetensors header is not a JSON object; the file is damaged", path=path)
    return header, 8 + n, size - 8 - n


def _check_entry(path: str, name: str, entry: Any, data_size: int) -> TensorInfo:
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise CorruptFileError("header entry lacks dtype/shape/data_offsets; the file is damaged", path=path, tensor=name)
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in DTYPE_SIZES:
        raise CorruptFileError(f"unknown dtype {dtype!r} in header", path=path, tensor=name)
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and d >= 0 for d in shape)
        or not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) for o in offsets)
    ):
        raise CorruptFileError("malformed shape or data_offsets in header", path=path, tensor=name)
    start, end = offsets
    expected = math.prod(shape) * DTYPE_SIZES[dtype]
    if end < start or end - start != expected:
        raise HeaderMismatchError(
            f"header lies about sizes: shape {shape} of {dtype} needs {expected} bytes "
            f"but data_offsets [{start}, {end}] span {end - start}; the file is damaged",
            path=path,
            tensor=name,
        )
    if end > data_size:
        raise TruncatedFileError(
            f"file is truncated: tensor data ends at byte {end} of the data section "
            f"but only {data_size} bytes are there; re-download or re-export it",
            path=path,
            tensor=name,
        )
    return TensorInfo(name=name, shape=tuple(shape), dtype=dtype, file=path, nbytes=expected)


class SafetensorsFile(TensorStore):
    """One ``.safetensors`` file."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, "safetensors")
        header, self._data_start, data_size = read_header(self.path)
        meta = header.pop("__metadata__", None) or {}
        self.metadata = dict(meta) if isinstance(meta, dict) else {}
        entries = []
        for name, entry in header.items():
            info = _check_entry(self.path, name, entry, data_size)
            entries.append((entry["data_offsets"][0], info))
        entries.sort(key=lambda e: e[0])
        prev_end = 0
        for start, info in entries:
            if start < prev_end:
                raise HeaderMismatchError("header lies about sizes: tensor data regions overlap", path=self.path, tensor=info.name)
            prev_end = start + info.nbytes
        self._offsets = {info.name: start for start, info in entries}
        self._infos = {info.name: info for _, info in entries}
        self._fh = None

    def _read(self, info: TensorInfo) -> "torch.Tensor":
        import torch

        if self._fh is None:
            self._fh = open(self.path, "rb")
        buf = torch.empty(info.nbytes, dtype=torch.uint8)
        self._fh.seek(self._data_start + self._offsets[info.name])
        got = self._fh.readinto(memoryview(buf.numpy()))
        if got != info.nbytes:
            raise TruncatedFileError(
                f"file ended after {got} of {info.nbytes} bytes while reading; re-download or re-export it",
                path=self.path,
                tensor=info.name,
            )
        return buf.view(torch_dtype(info.dtype)).reshape(info.shape)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
