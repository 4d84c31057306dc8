"""`vqtool inspect` reports from headers alone, fast and without loading tensors."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from vqtool.cli import cli
from vqtool.inspect import describe

WAN_14B = dict(
    patch_size=(1, 2, 2), num_attention_heads=40, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=13824, num_layers=40,
)


def write_sparse_safetensors(path, shapes: dict[str, tuple[int, ...]], dtype="BF16", itemsize=2) -> int:
    """A valid safetensors file whose data region is a hole: headers are real, no data was ever written."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape)) * itemsize
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    return offset


@pytest.fixture(scope="module")
def sparse_14b(tmp_path_factory):
    """The full Wan2.1 14B key set and shapes, in 6 sparse shards plus an index (~28.6 GB apparent, ~0 on disk)."""
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel(**WAN_14B)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    folder = tmp_path_factory.mktemp("wan14b")
    names = list(shapes)
    weight_map, total = {}, 0
    for i in range(6):
        shard = f"diffusion_pytorch_model-{i + 1:05d}-of-00006.safetensors"
        part = {n: shapes[n] for n in names[i::6]}
        total += write_sparse_safetensors(folder / shard, part)
        weight_map.update(dict.fromkeys(part, shard))
    (folder / "diffusion_pytorch_model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "config.json").write_text(json.dumps({"_class_name": "WanTransformer3DModel", **WAN_14B}))
    return folder, len(shapes), total


def test_inspect_of_a_14b_sharded_checkpoint_reads_only_headers(sparse_14b):
    folder, count, total = sparse_14b
    probe = (
        "import resource, sys, time\n"
        "from vqtool.io.safetensors_file import SafetensorsFile\n"
        "def boom(self, info): raise RuntimeError('tensor data was read')\n"
        "SafetensorsFile._read = boom\n"
        "from vqtool.inspect import describe\n"
        "t = time.perf_counter(); r = describe(sys.argv[1]); dt = time.perf_counter() - t\n"
        "c = r['components']['transformer']\n"
        "print(c['tensor_count'], c['param_count'], c['tensor_bytes'], resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, dt)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(folder)], capture_output=True, text=True, check=True).stdout
    n, params, nbytes, maxrss_kb, seconds = out.split()
    assert int(n) == count
    assert int(nbytes) == total and int(params) == total // 2
    assert int(params) > 14_000_000_000
    assert int(maxrss_kb) < 1_000_000, f"peak RSS {int(maxrss_kb) // 1024} MB while inspecting a {total / 1e9:.1f} GB checkpoint"
    assert float(seconds) < 10


def test_inspect_reports_format_counts_dtypes_and_sizes(tmp_path):
    sd = {"a.weight": torch.randn(8, 16), "b.weight": torch.randn(4, 4).bfloat16(), "c": torch.zeros(3).half()}
    save_file(sd, tmp_path / "m.safetensors")
    report = describe(tmp_path / "m.safetensors")
    c = report["components"]["model"]
    assert report["format"] == "safetensors"
    assert c["tensor_count"] == 3 and c["param_count"] == 128 + 16 + 3
    assert c["dtypes"]["F32"] == {"tensors": 1, "params": 128, "bytes": 512}
    assert c["dtypes"]["BF16"]["bytes"] == 32
    assert c["file_size"] == os.path.getsize(tmp_path / "m.safetensors")
    assert c["family"] in ("unknown", None) or isinstance(c["family"], str)


def test_inspect_gguf_shows_metadata_ggml_types_and_bits_per_weight(tmp_path):
    import gguf
    from gguf.quants import quantize

    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "wan")
    w.add_string("general.name", "tiny")
    w.add_tensor("blocks.0.ffn.0.weight", quantize(rng.standard_normal((4, 256), dtype=np.float32), gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("blocks.0.norm3.weight", rng.standard_normal(256, dtype=np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    result = CliRunner().invoke(cli, ["inspect", str(tmp_path / "m.gguf"), "--json"])
    assert result.exit_code == 0, result.output
    c = json.loads(result.output)["components"]["model"]
    g = c["gguf"]
    assert g["metadata"]["general.name"] == "tiny" and g["metadata"]["general.architecture"] == "wan"
    assert g["ggml_types"] == {"Q8_0": 1, "F32": 1}
    per_tensor = {t["name"]: t for t in c["tensors"]}
    assert per_tensor["blocks.0.ffn.0.weight"]["ggml_type"] == "Q8_0"
    by_role = g["bits_per_weight_by_role"]
    assert sum(v["params"] for v in by_role.values()) == 4 * 256 + 256
    q8_bytes = 4 * 256 // 32 * 34
    assert c["bits_per_weight"] == round(8 * (q8_bytes + 1024) / (1024 + 256), 4)
    text = CliRunner().invoke(cli, ["inspect", str(tmp_path / "m.gguf")]).output
    assert "bits/weight" in text and "general.name = 'tiny'" in text


def test_inspect_bundled_tiny_model_end_to_end():
    result = CliRunner().invoke(cli, ["inspect", "bundled:tiny-wan2.1-t2v"])
    assert result.exit_code == 0, result.output
    assert "[transformer]" in result.output and "F32" in result.output


def test_help_is_instant_and_imports_no_heavy_module():
    probe = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "from vqtool.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'numpy', 'diffusers', 'transformers', 'safetensors', 'gguf') if m in sys.modules]\n"
        "print(time.perf_counter() - t, ','.join(heavy), file=sys.stderr)\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    seconds, heavy = (res.stderr.strip().split() + [""])[:2]
    assert heavy == ""
    assert float(seconds) < 1.0
    best = min(_timed([sys.executable, "-m", "vqtool", "--help"]) for _ in range(3))
    assert best < 1.0


def _timed(cmd) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, capture_output=True, check=True)
    return time.perf_counter() - t


def test_version_and_verbose_flags():
    from vqtool import __version__

    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    assert CliRunner().invoke(cli, ["-vv", "--help"]).exit_code == 0
