"""Torch pickles (``.pt``, ``.pth``, ``.bin``, ``.ckpt``), loaded only with ``weights_only=True``.

Zip-format files are memory-mapped (``mmap=True``), so listing names and shapes
does not read tensor data. Legacy (pre-1.6) pickles cannot be mapped and are read
whole, with a warning. Wrappers are unwrapped: SAT's ``{'module': sd}``, Lightning's
``{'state_dict': sd}``, ``{'model': sd}`` and nestings of those.
"""

from __future__ import annotations

import logging
import os
import pickle
import zipfile
from typing import TYPE_CHECKING, Any

from vqtool.errors import CorruptFileError, InputError, TruncatedFileError, UnsafePickleError
from vqtool.io.base import TensorInfo, TensorStore, dtype_name

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

# Keys that wrap a state dict, most specific first (SAT: module; Lightning/SAT VAE: state_dict).
WRAPPER_KEYS = ("module", "state_dict", "model", "model_state_dict", "ema")


def _numpy_safe_globals() -> list[Any]:
    """numpy types that DeepSpeed/SAT client state (RNG states) pickle: plain data, no code."""
    import numpy as np

    found: list[Any] = [np.ndarray, np.dtype]
    for mod_name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            mod = __import__(mod_name, fromlist=["_reconstruct", "scalar"])
        except ImportError:
            continue
        found += [getattr(mod, "_reconstruct"), getattr(mod, "scalar")]
        break
    found += [type(np.dtype(t)) for t in ("uint32", "int64", "float64", "float32", "uint8")]
    return found


def _load(path: str) -> Any:
    import torch

    mmap = zipfile.is_zipfile(path)
    if not mmap:
        log.warning("%s: legacy (non-zip) torch pickle: it cannot be memory-mapped and is read whole", path)
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Weights only load failed" in text or "weights_only" in text:
            culprit = ""
            for line in text.splitlines():
                if "GLOBAL" in line or "Unsupported global" in line:
                    culprit = " (" + line.strip().rstrip(".") + ")"
                    break
            raise UnsafePickleError(
                "refused to unpickle: the file references code, not just tensors" + culprit + ". vqtool loads pickles "
                "only with weights_only=True; if you trust the file, re-save its state_dict with torch.save or as safetensors",
                path=path,
            ) from None
        raise CorruptFileError(f"not a readable torch pickle ({text.splitlines()[0] if text else 'unpickling error'})", path=path) from None
    except EOFError:
        raise TruncatedFileError("file is truncated (pickle ended early); re-download or re-save it", path=path) from None
    except RuntimeError as exc:
        msg = str(exc).splitlines()[0]
        if "zip" in msg.lower() or "central directory" in msg.lower() or "file_size" in msg.lower():
            raise TruncatedFileError(f"damaged or truncated torch zip archive ({msg}); re-download or re-save it", path=path) from None
        raise CorruptFileError(f"not a readable torch checkpoint ({msg})", path=path) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read torch checkpoint: {exc}", path=path) from None


def unwrap_state_dict(obj: Any, path: str) -> dict[str, "torch.Tensor"]:
    """Find the state dict inside a loaded checkpoint object (see :data:`WRAPPER_KEYS`)."""
    import torch

    trail = []
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        trail.append(key)
        obj = obj[key]
    if not isinstance(obj, dict):
        raise InputError(f"torch checkpoint holds a {type(obj).__name__}, not a state dict of tensors", path=path)
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise InputError(
            f"no tensors found (top-level keys: {', '.join(map(str, list(obj)[:8]))}); "
            "expected a state dict or one wrapped in module/state_dict/model",
            path=path,
        )
    skipped = len(obj) - len(tensors)
    if skipped:
        log.info("%s: skipped %d non-tensor entries beside the state dict", path, skipped)
    if trail:
        log.debug("%s: state dict found under %s", path, "/".join(trail))
    return tensors


class TorchFile(TensorStore):
    """One torch pickle, opened with ``weights_only=True`` and memory-mapped when possible."""

    def __init__(self, path: str | os.PathLike) -> None:
        super().__init__(path, "torch")
        self._tensors = unwrap_state_dict(_load(self.path), self.path)
        for name, t in self._tensors.items():
            self._infos[name] = TensorInfo(
                name=name, shape=tuple(t.shape), dtype=dtype_name(t.dtype), file=self.path,
                nbytes=t.numel() * t.element_size(),
            )

    def _read(self, info: TensorInfo) -> "torch.Tensor":
        try:
            return self._tensors[info.name].clone()
        except RuntimeError as exc:  # a mapped page beyond a truncated end
            raise TruncatedFileError(f"cannot read tensor data ({exc})", path=self.path, tensor=info.name) from None

    def close(self) -> None:
        self._tensors = {}
