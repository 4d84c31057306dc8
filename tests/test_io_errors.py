"""Bad input gets its own clear one-line error naming the file (and tensor), never a traceback."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file

from vqtool.errors import (
    CorruptFileError,
    HeaderMismatchError,
    InputError,
    MissingShardError,
    TensorNotFoundError,
    TruncatedFileError,
    UnsafePickleError,
    UnsupportedFormatError,
)
from vqtool.io import open_store


@pytest.fixture
def good_file(tmp_path):
    path = tmp_path / "good.safetensors"
    save_file({"a": torch.randn(64, 64), "b": torch.randn(64)}, path)
    return path


def _rewrite_header(path, mutate):
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    mutate(header)
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data[8 + n :])


def test_truncated_safetensors_names_the_tensor_that_runs_past_the_end(good_file):
    data = good_file.read_bytes()
    good_file.write_bytes(data[:-100])
    with pytest.raises(TruncatedFileError, match=r"good\.safetensors: tensor '.': file is truncated"):
        open_store(good_file)


def test_safetensors_cut_inside_the_header_is_truncated(good_file):
    good_file.write_bytes(good_file.read_bytes()[:40])
    with pytest.raises(TruncatedFileError, match="header needs"):
        open_store(good_file)


def test_wrong_magic_is_not_a_safetensors_file(tmp_path):
    path = tmp_path / "x.safetensors"
    path.write_bytes(b"\x00" * 8 + b"this is not json at all" * 10)
    with pytest.raises(CorruptFileError, match="not a safetensors file \\(wrong magic"):
        open_store(path)


def test_header_that_lies_about_sizes_is_reported_with_both_numbers(good_file):
    _rewrite_header(good_file, lambda h: h["a"].__setitem__("shape", [64, 32]))
    with pytest.raises(HeaderMismatchError, match=r"tensor 'a': header lies about sizes: shape \[64, 32\] of F32 needs 8192 bytes"):
        open_store(good_file)


def test_overlapping_data_regions_are_rejected(good_file):
    def overlap(h):
        h["b"]["data_offsets"] = [0, 256]
    _rewrite_header(good_file, overlap)
    with pytest.raises(HeaderMismatchError, match="overlap"):
        open_store(good_file)


def test_index_naming_a_missing_shard(tmp_path):
    save_file({"a": torch.zeros(2)}, tmp_path / "m-00001-of-00002.safetensors")
    (tmp_path / "m.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "m-00001-of-00002.safetensors", "b": "m-00002-of-00002.safetensors", "c": "m-00002-of-00002.safetensors"}}))
    with pytest.raises(MissingShardError, match=r"missing shard\(s\): m-00002-of-00002.safetensors \(2 tensors\)"):
        open_store(tmp_path / "m.safetensors.index.json")


def test_index_claiming_a_tensor_its_shard_lacks(tmp_path):
    save_file({"a": torch.zeros(2)}, tmp_path / "m-00001-of-00001.safetensors")
    (tmp_path / "m.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "m-00001-of-00001.safetensors", "ghost": "m-00001-of-00001.safetensors"}}))
    with pytest.raises(CorruptFileError, match="lacks them \\(first: ghost\\)"):
        open_store(tmp_path / "m.safetensors.index.json")


def test_incomplete_shard_set_without_index(tmp_path):
    save_file({"a": torch.zeros(2)}, tmp_path / "m-00001-of-00003.safetensors")
    save_file({"b": torch.zeros(2)}, tmp_path / "m-00003-of-00003.safetensors")
    with pytest.raises(MissingShardError, match="missing m-00002-of-00003.safetensors"):
        open_store(tmp_path)


def test_unsafe_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    script = (
        "import os, torch\n"
        "class Evil:\n"
        f"    def __reduce__(self): return (os.system, ('touch {marker}',))\n"
        f"torch.save({{'module': {{'w': torch.zeros(2)}}, 'x': Evil()}}, r'{tmp_path / 'evil.pt'}')\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    with pytest.raises(UnsafePickleError, match="refused to unpickle.*weights_only=True"):
        open_store(tmp_path / "evil.pt")
    assert not marker.exists()


def test_truncated_torch_zip(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"w": torch.randn(256, 256)}, path)
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(TruncatedFileError, match="w.pt: damaged or truncated torch zip archive"):
        open_store(path)


def test_truncated_gguf_names_the_tensor(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "m.gguf"
    w = gguf.GGUFWriter(str(path), "wan")
    w.add_tensor("a", np.ones((64, 64), dtype=np.float32))
    w.add_tensor("b", np.ones((64, 64), dtype=np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    path.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(TruncatedFileError, match=r"m.gguf: .*(truncated|cut short)"):
        open_store(path)


def test_gguf_with_wrong_magic(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"GGML" + b"\x00" * 100)
    with pytest.raises(CorruptFileError, match=r"not a GGUF file \(wrong magic b'GGML'"):
        open_store(path)


def test_unknown_file_type_and_missing_path(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UnsupportedFormatError, match="unknown file type"):
        open_store(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="no such file or folder"):
        open_store(tmp_path / "absent.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UnsupportedFormatError, match="holds no weights"):
        open_store(tmp_path / "empty")


def test_unknown_tensor_name(good_file):
    with pytest.raises(TensorNotFoundError, match="tensor 'nope': no such tensor"):
        open_store(good_file).read("nope")


def test_sat_latest_pointing_nowhere(tmp_path):
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "latest").write_text("42")
    with pytest.raises(InputError, match="iteration '42' but transformer/42/mp_rank_00_model_states.pt does not exist"):
        open_store(tmp_path)


def _cli(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    env.pop("VQTOOL_DEBUG", None)
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "vqtool", *args], capture_output=True, text=True, env=env)


def test_cli_prints_one_line_and_exits_non_zero_without_traceback(good_file):
    good_file.write_bytes(good_file.read_bytes()[:-100])
    res = _cli("inspect", str(good_file))
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vqtool: error: ") and "truncated" in lines[0]
    assert "Traceback" not in res.stderr


def test_cli_debug_switch_shows_the_traceback(good_file):
    good_file.write_bytes(good_file.read_bytes()[:-100])
    res = _cli("--debug", "inspect", str(good_file))
    assert res.returncode != 0
    assert "Traceback" in res.stderr and "TruncatedFileError" in res.stderr
