"""Public entry points: :func:`quantize`, :func:`dequantize` and type facts."""

from __future__ import annotations

import numpy as np
from gguf.constants import GGMLQuantizationType

from vqtool.errors import NonFiniteError, ShapeError, VqtoolError
from vqtool.ggml.codecs import REGISTRY
from vqtool.ggml.ops import NUMPY
from vqtool.ggml.parallel import default_threads, encode_rows
from vqtool.ggml.registry import Codec


def codec(qtype) -> Codec:
    """The :class:`Codec` for a type name (``"Q4_K"``), id or ``GGMLQuantizationType``."""
    return REGISTRY.get(qtype)


def available_types() -> list[str]:
    """Names of every type :func:`quantize` can produce, in GGML id order."""
    return REGISTRY.names()


def block_size(qtype) -> int:
    """Elements per block (32 or 256; 1 for the float types)."""
    return codec(qtype).block_size


def row_size(qtype, n_per_row: int) -> int:
    """Bytes of one encoded row of ``n_per_row`` elements."""
    return codec(qtype).row_size(n_per_row)


def bits_per_weight(qtype) -> float:
    """Storage bits per element, scales included (Q4_K: 4.5)."""
    return codec(qtype).bits_per_weight


def can_quantize(qtype, n_per_row: int) -> bool:
    """True when vqtool encodes ``qtype`` and its block size divides ``n_per_row``."""
    return qtype in REGISTRY and n_per_row > 0 and n_per_row % codec(qtype).block_size == 0


def _is_torch(x) -> bool:
    return type(x).__module__.startswith("torch")


# Beyond this magnitude ggml's float32 intermediates overflow (x*x*x in the weighted
# sums of make_qx_quants reaches 3.4e38 near 7e12) and the fp16 block scales are
# already inf, which llama.cpp's ggml_validate_row_data rejects. Quantized types refuse
# such input instead of producing bytes that are neither valid nor ggml's.
MAX_ABS_VALUE = float(2**40)


def _check_values(x: np.ndarray, name: str | None, limit: float | None, row_offset: int = 0) -> None:
    """Raise for NaN/Inf (naming row and column) or, with ``limit``, for ``|x| > limit``."""
    top = max(float(x.max()), -float(x.min()))  # NaN propagates; one pass each, no temporary
    if top <= (limit if limit is not None else float(np.finfo(np.float32).max)):
        return  # also false for NaN and inf, which _check_finite then reports
    _check_finite(x, "tensor", name, row_offset)
    row = int(np.argmax(np.abs(x).max(axis=1))) + row_offset
    raise VqtoolError(
        f"tensor has a value of magnitude {top:.3g} in row {row}; quantized types need "
        f"|x| <= {limit:.3g} (ggml's float32 arithmetic overflows and its fp16 scales become inf)",
        tensor=name or "<unnamed>",
    )


def _check_finite(x: np.ndarray, what: str, name: str | None, row_offset: int = 0) -> None:
    finite = np.isfinite(x)
    if not finite.all():
        rows_ok = finite.reshape(x.shape[0], -1).all(axis=1)
        row = int(np.argmin(rows_ok))
        col = int(np.argmin(finite[row]))
        raise NonFiniteError(
            f"{what} has a non-finite value ({x[row, col]}) in row {row + row_offset}, column {col}; "
            "fix the source weights before quantizing",
            tensor=name or "<unnamed>",
        )


def _imatrix(imatrix, c: Codec, n_per_row: int, name: str | None):
    if imatrix is None or not c.uses_imatrix:
        return None
    qw = np.ascontiguousarray(np.asarray(imatrix, dtype=np.float32).reshape(-1))
    if qw.shape[0] != n_per_row:
        raise ShapeError(
            f"importance matrix has {qw.shape[0]} values but rows have {n_per_row} elements",
            tensor=name,
        )
    _check_finite(qw[None, :], "importance matrix", name)
    return qw


def quantize(x, qtype, imatrix=None, *, name: str | None = None, threads: int | None = None,
             device=None, row_offset: int = 0) -> np.ndarray:
    """Encode float32 rows as GGML ``qtype`` blocks, byte-identical to ``ggml_quantize_chunk``.

    Args:
        x: ``(rows, n_per_row)`` float32 array or torch tensor (1-D means one row).
        qtype: GGML type name (``"Q4_K"``), id or ``GGMLQuantizationType``.
        imatrix: optional per-column importance (length ``n_per_row``); like ggml,
            types that ignore it (floats, Q8_0) ignore it here too.
        name: tensor name for error messages.
        threads: CPU threads (default ``os.cpu_count()``).
        row_offset: added to row numbers in error messages, for callers that encode a
            tensor in row slices.
        device: ``None``/``"cpu"`` for the numpy exact path; a torch device
            (``"cuda"``, ``"cuda:1"``, or ``"torch:cpu"`` to run the torch path on the CPU)
            selects :mod:`vqtool.ggml.torch_ops`. A CUDA tensor with ``device=None``
            uses its own device.

    Returns:
        ``(rows, row_size(qtype, n_per_row))`` uint8 array.

    Example:
        >>> raw = quantize(np.random.randn(4, 256).astype(np.float32), "Q4_K")
        >>> raw.shape
        (4, 144)
    """
    c = codec(qtype)
    torch_device = _torch_device(x, device)
    host = x if torch_device is None else None
    if torch_device is None:
        if _is_torch(x):
            host = x.detach().to("cpu").float().numpy()
        arr = np.ascontiguousarray(np.asarray(host, dtype=np.float32))
    else:
        arr = x
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ShapeError(f"expected a 2-D (rows, n_per_row) matrix, got shape {tuple(arr.shape)}",
                         tensor=name)
    rows, n_per_row = int(arr.shape[0]), int(arr.shape[1])
    if n_per_row % c.block_size:
        raise ShapeError(
            f"row length {n_per_row} is not divisible by the {c.name} block size {c.block_size}",
            tensor=name,
        )
    qw = _imatrix(imatrix, c, n_per_row, name)
    row_bytes = c.row_size(n_per_row)
    if rows == 0:
        return np.empty((0, row_bytes), dtype=np.uint8)
    if torch_device is not None:
        from vqtool.ggml.torch_ops import quantize_torch

        return quantize_torch(c, arr, qw, torch_device, name, MAX_ABS_VALUE if c.block_size > 1 else None)
    _check_values(arr, name, MAX_ABS_VALUE if c.block_size > 1 else None, row_offset)
    return encode_rows(c.encode, NUMPY, arr, qw, row_bytes, threads or default_threads())


def _torch_device(x, device):
    if device is None:
        if _is_torch(x) and x.device.type != "cpu":
            return x.device
        return None
    text = str(device)
    if text == "cpu":
        return None
    if text.startswith("torch:"):
        return text.split(":", 1)[1]
    return device


def dequantize(raw, qtype, shape) -> np.ndarray:
    """Decode GGML blocks to float32 of logical ``shape`` (gguf-py's dequantizers).

    ``raw`` is any uint8 array (or bytes) holding exactly ``prod(shape)`` elements' blocks.
    """
    import gguf.quants

    c = codec(qtype)
    shape = tuple(int(s) for s in shape)
    if not shape or shape[-1] % c.block_size:
        raise ShapeError(f"row length {shape[-1] if shape else 0} is not divisible by the "
                         f"{c.name} block size {c.block_size}")
    data = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, (bytes, bytearray, memoryview)) \
        else np.ascontiguousarray(raw).view(np.uint8)
    byte_shape = gguf.quants.quant_shape_to_byte_shape(shape, c.qtype)
    if data.size != int(np.prod(byte_shape)):
        raise ShapeError(f"{data.size} bytes do not hold a {c.name} tensor of shape {shape} "
                         f"({int(np.prod(byte_shape))} bytes)")
    data = data.reshape(byte_shape)
    if c.qtype == GGMLQuantizationType.F32:
        return data.view(np.float32).reshape(shape).copy()
    if c.qtype == GGMLQuantizationType.F16:
        return data.view(np.float16).astype(np.float32).reshape(shape)
    out = gguf.quants.dequantize(data, c.qtype)
    if out.dtype != np.float32:
        raise VqtoolError(f"gguf-py returned {out.dtype} for {c.name}")
    return out.reshape(shape)
