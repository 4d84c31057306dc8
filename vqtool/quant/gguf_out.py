"""A streaming GGUF file writer: header first, then tensor data one tensor at a time.

gguf-py's :class:`gguf.GGUFWriter` serialises the KV section and tensor infos; tensor
data is then written at its precomputed offset as each tensor is encoded, so tensors
may arrive in any order and only one is in memory at a time. The file is written under
a temporary name in the target folder and renamed into place by :meth:`GGUFOut.commit`.
String KV values written with :meth:`GGUFOut.placeholder` can be filled in after the
data (source file hashes computed while quantizing) because their length is fixed.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from vqtool.errors import OutputExistsError, VqtoolError


@dataclass(frozen=True)
class TensorSlot:
    name: str
    shape: tuple[int, ...]  # torch order
    type: str
    nbytes: int
    offset: int  # relative to the data section


class GGUFOut:
    """One GGUF file being written; use :meth:`open`, :meth:`write_tensor` per tensor, then :meth:`commit`."""

    def __init__(self, path: str, arch: str, *, overwrite: bool = False) -> None:
        self.path = os.fspath(path)
        if os.path.exists(self.path) and not overwrite:
            raise OutputExistsError(f"{self.path} exists; pass --overwrite to replace it")
        folder = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise VqtoolError(f"cannot create output folder {folder}: {exc.strerror}") from None
        fd, self.tmp = tempfile.mkstemp(prefix="." + os.path.basename(self.path) + ".", suffix=".partial", dir=folder)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(self.tmp, 0o666 & ~umask)  # mkstemp makes 0600; the finished file gets normal permissions
        import gguf

        self._gguf = gguf
        self._writer = gguf.GGUFWriter(self.tmp, arch)
        self._slots: dict[str, TensorSlot] = {}
        self._placeholders: dict[str, str] = {}
        self._written: set[str] = set()
        self._data_start = 0
        self._fh = None

    # -- header -----------------------------------------------------------------------------
    def add(self, key: str, value: Any) -> None:
        """Add one KV pair; the GGUF value type follows the Python type (str, bool, int, float, list)."""
        w = self._writer
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value) if 0 <= value < 2**32 else w.add_int64(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, (list, tuple)):
            if value and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                w.add_key_value(key, list(value), self._gguf.GGUFValueType.ARRAY, sub_type=self._gguf.GGUFValueType.INT32)
            else:
                w.add_array(key, list(value))
        else:
            raise TypeError(f"cannot store {type(value).__name__} in GGUF metadata ({key})")

    def placeholder(self, key: str, length: int) -> None:
        """A string value of ``length`` bytes to be filled by :meth:`fill` before commit."""
        token = f"@@vqtool-pending-{len(self._placeholders):04d}@@"
        if length < len(token):
            raise ValueError("placeholder too short")
        token = token.ljust(length, "#")
        self._placeholders[key] = token
        self._writer.add_string(key, token)

    def add_tensor(self, name: str, shape: tuple[int, ...], qtype: str, nbytes: int) -> None:
        """Declare a tensor (torch-order logical shape) before :meth:`open`."""
        gq = self._gguf.GGMLQuantizationType[qtype]
        blk, size = self._gguf.GGML_QUANT_SIZES[gq]
        byte_shape = (*shape[:-1], shape[-1] // blk * size) if shape else (size,)
        self._writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=gq)
        offset = sum(self._gguf.GGUFWriter.ggml_pad(s.nbytes, self._writer.data_alignment) for s in self._slots.values())
        self._slots[name] = TensorSlot(name, tuple(shape), qtype, nbytes, offset)

    def open(self) -> None:
        """Write magic, KV and tensor infos; afterwards tensors can be written in any order."""
        w = self._writer
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        self._fh = w.fout[0]
        pos = self._fh.tell()
        self._data_start = self._gguf.GGUFWriter.ggml_pad(pos, w.data_alignment)
        end = self._data_start + sum(self._gguf.GGUFWriter.ggml_pad(s.nbytes, w.data_alignment) for s in self._slots.values())
        self._fh.truncate(end)

    # -- data -------------------------------------------------------------------------------
    def write_tensor(self, name: str, data: np.ndarray) -> None:
        """Write one encoded tensor (its raw bytes) at its slot."""
        slot = self._slots[name]
        raw = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        if raw.nbytes != slot.nbytes:
            raise VqtoolError(f"internal: tensor {name} encoded to {raw.nbytes} bytes, planned {slot.nbytes}")
        assert self._fh is not None
        self._fh.seek(self._data_start + slot.offset)
        raw.tofile(self._fh)
        self._written.add(name)

    def fill(self, key: str, value: str) -> None:
        """Replace a placeholder's bytes in the written header (``value`` is padded with spaces)."""
        token = self._placeholders.pop(key)
        if len(value.encode()) > len(token):
            raise ValueError(f"{key}: value longer than its placeholder")
        assert self._fh is not None
        self._fh.flush()
        with open(self.tmp, "r+b") as f:
            head = f.read(self._data_start)
            at = head.find(token.encode())
            f.seek(at)
            f.write(value.encode().ljust(len(token), b" "))

    def commit(self) -> None:
        """Check every tensor was written, then rename the temporary file into place."""
        missing = [n for n in self._slots if n not in self._written]
        if missing:
            raise VqtoolError(f"internal: {len(missing)} tensors were never written (first: {missing[0]})")
        for key in list(self._placeholders):
            self.fill(key, "")
        assert self._fh is not None
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._writer.close()
        self._fh = None
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Remove the temporary file (after an error or interrupt)."""
        try:
            self._writer.close()
        finally:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
