"""Importance matrices in llama.cpp's formats: GGUF (``general.type = "imatrix"``) and legacy ``.dat``.

Either way the result is the mean squared activation per input column of each
weight (what ``llama-quantize`` feeds the ``_impl`` quantizers), keyed by tensor name.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from vqtool.errors import CorruptFileError, InputError, NonFiniteError


def _check(name: str, values: np.ndarray, path: str) -> np.ndarray:
    if not np.isfinite(values).all():
        raise NonFiniteError("importance matrix has non-finite values", path=path, tensor=name)
    return values.astype(np.float32, copy=False)


def load_gguf_imatrix(path: str) -> dict[str, np.ndarray]:
    from vqtool.io import GGUFFile

    store = GGUFFile(path)
    out: dict[str, np.ndarray] = {}
    for name in store.keys():
        if not name.endswith(".in_sum2"):
            continue
        base = name[: -len(".in_sum2")]
        sums = store.read(name).numpy().astype(np.float64)  # torch order [n_mat, ne0]
        counts_name = base + ".counts"
        if counts_name not in store:
            raise CorruptFileError(f"imatrix has {name} but no {counts_name}", path=path)
        counts = store.read(counts_name).numpy().astype(np.float64).reshape(-1)
        sums = sums.reshape(len(counts), -1)
        values = np.where(counts[:, None] > 0, sums / np.maximum(counts[:, None], 1), 1.0)
        out[base] = _check(base, values.reshape(-1), path)
    if not out:
        raise CorruptFileError("GGUF file holds no '<tensor>.in_sum2' entries; is it an imatrix?", path=path)
    return out


def load_dat_imatrix(path: str) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        data = f.read()
    try:
        (n,) = struct.unpack_from("<i", data, 0)
        pos = 4
        for _ in range(n):
            (ln,) = struct.unpack_from("<i", data, pos)
            name = data[pos + 4 : pos + 4 + ln].decode()
            pos += 4 + ln
            ncall, nval = struct.unpack_from("<ii", data, pos)
            pos += 8
            values = np.frombuffer(data, dtype=np.float32, count=nval, offset=pos).astype(np.float64)
            pos += 4 * nval
            out[name] = _check(name, values / max(ncall, 1), path)
    except (struct.error, ValueError, UnicodeDecodeError):
        raise CorruptFileError("not a valid legacy imatrix .dat file (truncated or garbled)", path=path) from None
    return out


def load_imatrix(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Tensor name -> per-column importance (float32), from a GGUF or legacy ``.dat`` imatrix."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise InputError("no such imatrix file", path=path)
    with open(path, "rb") as f:
        magic = f.read(4)
    return load_gguf_imatrix(path) if magic == b"GGUF" else load_dat_imatrix(path)


def lookup(imatrix: dict[str, np.ndarray] | None, name: str, n_per_row: int) -> np.ndarray | None:
    """The importance vector for tensor ``name`` (also tried without ``.weight``), if its length fits."""
    if not imatrix:
        return None
    values = imatrix.get(name)
    if values is None and name.endswith(".weight"):
        values = imatrix.get(name[: -len(".weight")])
    if values is None or values.shape[0] != n_per_row:
        return None
    return values
