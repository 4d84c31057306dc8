"""A torchao-quantized Diffusers folder as a :class:`~vqtool.io.TensorStore`, so validation can read it.

``vqtool validate`` describes candidates and compares their weights with the reference through
stores; a torchao folder's safetensors hold flattened tensor-subclass pieces
(``to_q._weight_qdata``, ``_weight_scale``...) that no mapping table names. This store loads the
folder through diffusers (as any user would), and serves each parameter under its Diffusers name,
quantized weights dequantized to float32, so the ordinary Diffusers table identifies it and the
per-layer weight error table covers torchao variants like GGUF ones.

Example::

    with TorchaoStore("wan-int8/") as store:
        w = store.read("blocks.0.attn1.to_q.weight")   # dequantized float32
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from vqtool.io import TensorInfo, TensorStore

if TYPE_CHECKING:  # pragma: no cover
    import torch


class TorchaoStore(TensorStore):
    """Every parameter and persistent buffer of a torchao export, by Diffusers name (headers from the loaded model)."""

    def __init__(self, path: str | os.PathLike) -> None:
        import json

        from vqtool.io import dtype_name
        from vqtool.publish.torchao_export import load_torchao_transformer, read_provenance

        super().__init__(path, "torchao")
        with open(os.path.join(self.path, "config.json"), encoding="utf-8") as f:
            self.config = json.load(f)
        prov = read_provenance(self.path) or {}
        self.metadata = {k: v for k, v in (("vqtool.policy.name", prov.get("policy")),
                                           ("vqtool.family", prov.get("family")),
                                           ("vqtool.variant", prov.get("variant")),
                                           ("vqtool.source_format", (prov.get("source") or {}).get("format")))
                         if v is not None}
        self._model = load_torchao_transformer(self.path)
        weights = sorted(os.path.join(self.path, f) for f in os.listdir(self.path) if f.endswith(".safetensors"))
        file = weights[0] if weights else self.path
        self._tensors: dict[str, torch.Tensor] = dict(self._model.named_parameters())
        self._tensors.update({n: b for n, b in self._model.named_buffers() if n in self._model.state_dict()})
        for name, t in self._tensors.items():
            stored = getattr(t, "qdata", t)
            self._infos[name] = TensorInfo(name, tuple(t.shape), dtype_name(stored.dtype), file,
                                           stored.numel() * stored.element_size())

    def _read(self, info: TensorInfo) -> "torch.Tensor":
        import torch
        from torchao.utils import TorchAOBaseTensor

        t = self._tensors[info.name]
        data = t.data if isinstance(t, torch.nn.Parameter) else t
        if isinstance(data, TorchAOBaseTensor):
            return data.dequantize().to(torch.float32)
        return data.detach().clone()

    @property
    def files(self) -> list[str]:
        return sorted(os.path.join(self.path, f) for f in os.listdir(self.path) if f.endswith(".safetensors"))

    def close(self) -> None:
        self._tensors = {}
        self._model = None
