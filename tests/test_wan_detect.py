"""Detection of Wan2.1 transformers, the Wan VAE and UMT5, from names and shapes alone.

Full-shape key sets come from meta-device models (no memory), so 1.3B vs 14B is decided on the
released shapes; tiny files check every on-disk layout through vqtool.io.
"""

from __future__ import annotations

import pytest
import torch

from vqtool.detect import detect
from vqtool.mapping import plan_conversion
from vqtool.testing import DictStore
from vqtool.testing.wan import (COMFY_PREFIX, FULL_TRANSFORMER, build_transformer, build_umt5, build_vae,
                                meta_state_dict, write_transformer, write_umt5, write_vae)

# Reference checkpoint-formats.md §4.1 (configs and tensor counts of the upstream files).
EXPECTED = {
    "t2v-1.3B": dict(n=825, dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_dim=16, vace_layers=None),
    "t2v-14B": dict(n=1095, dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=16, vace_layers=None),
    "i2v-14B": dict(n=1303, dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=36, vace_layers=None),
    "vace-1.3B": dict(n=1264, dim=1536, ffn_dim=8960, num_heads=12, num_layers=30, in_dim=16,
                      vace_layers=list(range(0, 30, 2))),
    "vace-14B": dict(n=1331, dim=5120, ffn_dim=13824, num_heads=40, num_layers=40, in_dim=16,
                     vace_layers=list(range(0, 40, 5))),
}


def _meta_in(fmt: str, sd: dict, prefix: str = "") -> dict:
    """The key set (as meta tensors) of ``sd`` renamed into ``fmt``, from the plan alone."""
    plan = plan_conversion(DictStore(sd), fmt, prefix=prefix)
    return {t.name: torch.empty(t.shape, dtype=torch.bfloat16, device="meta") for t in plan.tensors}


@pytest.fixture(scope="module", params=sorted(EXPECTED))
def full(request):
    return request.param, meta_state_dict("transformer", request.param)


@pytest.mark.parametrize("layout", ["diffusers", "original", "comfy"])
def test_full_shape_transformers_are_told_apart(full, layout):
    name, sd = full
    keys = sd if layout == "diffusers" else _meta_in("original", sd, COMFY_PREFIX if layout == "comfy" else "")
    d = detect(DictStore(keys))
    want = EXPECTED[name]
    assert (d.family, d.component, d.variant) == ("wan", "transformer", name)
    assert d.format == ("diffusers" if layout == "diffusers" else "original")
    assert d.prefix == (COMFY_PREFIX if layout == "comfy" else "")
    assert not d.problems
    if layout != "diffusers":
        assert len(keys) == want["n"]
    for key in ("dim", "ffn_dim", "num_heads", "num_layers", "in_dim", "vace_layers"):
        assert d.config[key] == want[key], key
    assert d.config["out_dim"] == 16 and d.config["text_dim"] == 4096 and d.config["patch_size"] == [1, 2, 2]
    assert len(d.roles) == len(keys)


def test_full_shape_vae_and_umt5():
    vae = detect(DictStore(meta_state_dict("vae", "")))
    assert (vae.family, vae.component, vae.variant, vae.format) == ("wan", "vae", "wan2.1-vae", "diffusers")
    assert vae.config["base_dim"] == 96 and vae.config["z_dim"] == 16
    t5 = meta_state_dict("umt5", "")
    orig = _meta_in("original", t5)
    assert len(orig) == 242  # reference §4.4
    d = detect(DictStore(orig))
    assert (d.family, d.variant, d.format) == ("umt5", "umt5-xxl", "original")
    assert (d.config["num_heads"], d.config["num_layers"], d.config["ffn_dim"]) == (64, 24, 10240)


def test_unrecognised_names_are_family_unknown():
    d = detect(DictStore({"foo.weight": torch.zeros(2)}))
    assert d.family == "unknown" and not d.roles


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan_detect")
    out = {}
    model = build_transformer("i2v", seed=5)
    for fmt in ("diffusers", "original", "original-sharded", "comfy"):
        out[("transformer", fmt)] = write_transformer(model, root, fmt)
    vae = build_vae(seed=5)
    out[("vae", "diffusers")] = write_vae(vae, root, "diffusers")
    out[("vae", "original")] = write_vae(vae, root, "original")
    t5 = build_umt5(seed=5)
    out[("text_encoder", "transformers")] = write_umt5(t5, root, "diffusers")
    out[("text_encoder", "original")] = write_umt5(t5, root, "original")
    return out


@pytest.mark.parametrize("component,fmt", [
    ("transformer", "diffusers"), ("transformer", "original"), ("transformer", "original-sharded"),
    ("transformer", "comfy"), ("vae", "diffusers"), ("vae", "original"),
    ("text_encoder", "transformers"), ("text_encoder", "original"),
])
def test_every_tiny_file_layout_is_detected(tiny_files, component, fmt):
    from vqtool.io import open_store

    with open_store(tiny_files[(component, fmt)]) as store:
        d = detect(store)
    assert d.component == component and not d.problems
    assert d.format == {"original-sharded": "original", "comfy": "original"}.get(fmt, fmt)
    if component == "transformer":
        assert d.variant == "i2v-custom" and d.config["image_dim"] == 64 and d.config["in_dim"] == 36
    assert all(r for r in d.roles.values())
