"""Deterministic tiny random models for tests and examples (one module per family).

:class:`DictStore` wraps an in-memory state dict (or meta tensors, for header-only
full-shape key sets) as a :class:`vqtool.io.TensorStore`, so the mapping engine can be
exercised without writing files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vqtool.io.base import TensorInfo, TensorStore, dtype_name

if TYPE_CHECKING:  # pragma: no cover
    import torch


class DictStore(TensorStore):
    """A TensorStore over ``{name: tensor}``; meta tensors give infos but cannot be read."""

    def __init__(self, tensors: dict[str, "torch.Tensor"], *, path: str = "<memory>", config: dict[str, Any] | None = None):
        super().__init__(path, "memory")
        self._tensors = dict(tensors)
        self.config = config
        for name, t in self._tensors.items():
            dtype = dtype_name(t.dtype)
            self._infos[name] = TensorInfo(name, tuple(t.shape), dtype, path, t.numel() * t.element_size())

    def _read(self, info: TensorInfo) -> "torch.Tensor":
        t = self._tensors[info.name]
        if t.device.type == "meta":
            raise RuntimeError(f"{info.name} is a meta tensor (header-only store)")
        return t


def seeded_(module: "torch.nn.Module", seed: int, scale: float = 0.05) -> "torch.nn.Module":
    """Re-draw every parameter and buffer-free weight of ``module`` from a seeded generator, in place.

    Initialisers leave some tensors constant (zeros, ones); re-drawing makes every tensor
    distinct, so a mapping that swaps two same-shaped tensors changes the forward output.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
            # Norm gains near 1 keep activations in a sane range; everything else near 0.
            base = 1.0 if name.endswith("gamma") or ("norm" in name and name.endswith("weight")) else 0.0
            p.copy_((torch.randn(p.shape, generator=gen, dtype=torch.float32) * scale + base).to(p.dtype))
    return module
