"""`--imatrix` feeds llama.cpp-format importance matrices (GGUF and legacy .dat) to the codecs."""

from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest

from vqtool import ggml
from vqtool.errors import CorruptFileError
from vqtool.io import open_store
from vqtool.quant.imatrix import load_imatrix
from vqtool.quant.run import quantize_model
from vqtool.testing import wan

TARGET = "blocks.0.ffn.0.weight"


def write_gguf_imatrix(path, entries: dict[str, np.ndarray], counts: int = 4) -> None:
    w = gguf.GGUFWriter(str(path), "imatrix")
    w.add_string("general.type", "imatrix")
    w.add_uint32("imatrix.chunk_count", counts)
    for name, mean_sq in sorted(entries.items()):
        w.add_tensor(f"{name}.in_sum2", (mean_sq * counts).astype(np.float32).reshape(1, -1))
        w.add_tensor(f"{name}.counts", np.full((1, 1), counts, dtype=np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()


def write_dat_imatrix(path, entries: dict[str, np.ndarray], ncall: int = 3) -> None:
    out = struct.pack("<i", len(entries))
    for name, mean_sq in entries.items():
        raw = name.encode()
        out += struct.pack("<i", len(raw)) + raw + struct.pack("<ii", ncall, mean_sq.size)
        out += (mean_sq * ncall).astype(np.float32).tobytes()
    out += struct.pack("<i", 10) + struct.pack("<i", 4) + b"data"
    path.write_bytes(out)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("imx")
    return wan.write_transformer(wan.build_transformer("t2v", seed=11), root, "original")


@pytest.mark.parametrize("fmt", ["gguf", "dat"])
def test_imatrix_reaches_the_codec_and_changes_the_bytes(source, tmp_path, fmt):
    rng = np.random.default_rng(0)
    importance = rng.lognormal(size=256).astype(np.float32)
    path = tmp_path / f"im.{fmt}"
    (write_gguf_imatrix if fmt == "gguf" else write_dat_imatrix)(path, {TARGET: importance})
    loaded = load_imatrix(path)
    assert np.allclose(loaded[TARGET], importance, rtol=1e-6)
    quantize_model(str(source), [("q4_k_m", str(tmp_path / "with.gguf"))], imatrix=str(path), progress=False)
    quantize_model(str(source), [("q4_k_m", str(tmp_path / "without.gguf"))], progress=False)
    with_ = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(tmp_path / "with.gguf")).tensors}
    without = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(tmp_path / "without.gguf")).tensors}
    w = open_store(source).read(TARGET).numpy()
    assert np.array_equal(with_[TARGET].reshape(-1), ggml.quantize(w, "Q4_K", loaded[TARGET]).reshape(-1))
    assert not np.array_equal(with_[TARGET], without[TARGET])
    other = "blocks.1.ffn.0.weight"  # no imatrix entry: quantized as without one
    assert np.array_equal(with_[other], without[other])


def test_damaged_imatrix_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.dat"
    path.write_bytes(struct.pack("<i", 5) + b"\x01\x00")
    with pytest.raises(CorruptFileError, match="bad.dat: not a valid legacy imatrix"):
        load_imatrix(path)
