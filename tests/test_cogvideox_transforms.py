"""CogVideoX transforms: the SAT adaLN 12-way chunk reorder is exact and invertible."""

from __future__ import annotations

import pytest
import torch

from vqtool.errors import ShapeError
from vqtool.mapping.cogvideox import adaln_fuse, adaln_split

H, T = 8, 4


def _fused(seed: int = 0, bias: bool = False) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((12 * H,) if bias else (12 * H, T), generator=gen)


@pytest.mark.parametrize("bias", [False, True])
def test_adaln_split_follows_the_documented_chunk_order(bias):
    # Reference §1.3: norm1 = cat(chunks[0:3] + chunks[6:9]); norm2 = cat(chunks[3:6] + chunks[9:12]).
    fused = _fused(bias=bias)
    c = fused.chunk(12)
    norm1, norm2 = adaln_split([fused])
    assert torch.equal(norm1, torch.cat(c[0:3] + c[6:9]))
    assert torch.equal(norm2, torch.cat(c[3:6] + c[9:12]))


@pytest.mark.parametrize("bias", [False, True])
def test_adaln_fuse_inverts_split_bit_exactly(bias):
    fused = _fused(seed=3, bias=bias)
    (back,) = adaln_fuse(adaln_split([fused]))
    assert torch.equal(back, fused)


def test_adaln_split_matches_what_sat_and_diffusers_compute():
    # SAT: chunk(12) of the modulation output, named (shift, scale, gate) msa, mlp, text msa, text mlp.
    # Diffusers CogVideoXLayerNormZero: linear(...).chunk(6) = shift, scale, gate, enc_shift, enc_scale, enc_gate.
    w, b = _fused(1), _fused(2, bias=True)
    (n1w, n2w), (n1b, n2b) = adaln_split([w]), adaln_split([b])
    emb = torch.randn(2, T)
    sat = (emb @ w.T + b).chunk(12, dim=1)
    d1 = (emb @ n1w.T + n1b).chunk(6, dim=1)
    d2 = (emb @ n2w.T + n2b).chunk(6, dim=1)
    for got, want in zip(d1, (sat[0], sat[1], sat[2], sat[6], sat[7], sat[8])):
        assert torch.equal(got, want)
    for got, want in zip(d2, (sat[3], sat[4], sat[5], sat[9], sat[10], sat[11])):
        assert torch.equal(got, want)


def test_adaln_rejects_a_tensor_that_is_not_12_chunks():
    with pytest.raises(ShapeError, match="12 chunks"):
        adaln_split([torch.zeros(13, T)])
    with pytest.raises(ShapeError, match="differ"):
        adaln_fuse([torch.zeros(6, T), torch.zeros(12, T)])
