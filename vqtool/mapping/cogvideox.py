"""CogVideoX-specific tensor transforms (SAT <-> canonical), registered by name.

Canonical CogVideoX names are the Diffusers names. Two SAT tensors are not plain
renames:

- ``attention.query_key_value`` fuses q, k, v (model-parallel size 1 stacks
  ``[q; k; v]`` on dim 0): the generic ``chunk`` / ``cat`` transforms handle it.
- ``adaln_layer.adaLN_modulations.{i}.1`` is one ``[12h, t]`` linear whose output
  chunks SAT consumes as (shift, scale, gate) for the video stream's attention,
  the same for its MLP, then the same two triples for the text stream
  (``AdaLNMixin.layer_forward`` in ``sat/dit_video_concat.py``). Diffusers splits it
  into two ``CogVideoXLayerNormZero`` linears, each ``[6h, t]`` ordered
  (shift, scale, gate, enc_shift, enc_scale, enc_gate): ``norm1`` for attention and
  ``norm2`` for the MLP. :func:`adaln_split` and :func:`adaln_fuse` convert, exactly
  (pure row permutations, no arithmetic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vqtool.errors import ShapeError
from vqtool.mapping.transforms import register

if TYPE_CHECKING:  # pragma: no cover
    import torch

ADALN_CHUNKS = 12

# SAT chunk index -> (diffusers linear, position in its 6 chunks).
# SAT: 0-2 video msa (shift, scale, gate), 3-5 video mlp, 6-8 text msa, 9-11 text mlp.
_SAT_TO_DIFFUSERS = {0: (0, 0), 1: (0, 1), 2: (0, 2), 3: (1, 0), 4: (1, 1), 5: (1, 2),
                     6: (0, 3), 7: (0, 4), 8: (0, 5), 9: (1, 3), 10: (1, 4), 11: (1, 5)}


def _chunks(tensor: "torch.Tensor", parts: int, what: str) -> list["torch.Tensor"]:
    if tensor.ndim == 0 or tensor.shape[0] % parts:
        raise ShapeError(f"{what}: dim 0 of shape {tuple(tensor.shape)} is not divisible into {parts} chunks")
    return list(tensor.chunk(parts, dim=0))


@register("cogvideox.adaln_split")
def adaln_split(inputs: list["torch.Tensor"]) -> list["torch.Tensor"]:
    """SAT ``adaLN_modulations.{i}.1`` ([12h, ...]) -> [``norm1.linear``, ``norm2.linear``] ([6h, ...] each).

    Works for the weight ([12h, t]) and the bias ([12h]).
    """
    (fused,) = inputs
    chunks = _chunks(fused, ADALN_CHUNKS, "SAT adaLN modulation")
    out: list[list] = [[None] * 6, [None] * 6]
    for sat_index, (which, pos) in _SAT_TO_DIFFUSERS.items():
        out[which][pos] = chunks[sat_index]
    import torch

    return [torch.cat(out[0], dim=0).contiguous(), torch.cat(out[1], dim=0).contiguous()]


@register("cogvideox.adaln_fuse")
def adaln_fuse(inputs: list["torch.Tensor"]) -> list["torch.Tensor"]:
    """Inverse of :func:`adaln_split`: [``norm1.linear``, ``norm2.linear``] -> SAT ``[12h, ...]``."""
    import torch

    norm1, norm2 = inputs
    if norm1.shape != norm2.shape:
        raise ShapeError(f"CogVideoX adaLN: norm1 {tuple(norm1.shape)} and norm2 {tuple(norm2.shape)} differ")
    parts = (_chunks(norm1, 6, "CogVideoX norm1.linear"), _chunks(norm2, 6, "CogVideoX norm2.linear"))
    ordered = [parts[which][pos] for _, (which, pos) in sorted(_SAT_TO_DIFFUSERS.items())]
    return [torch.cat(ordered, dim=0).contiguous()]
