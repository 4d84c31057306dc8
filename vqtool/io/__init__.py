"""The lazy tensor store: one interface over every checkpoint form vqtool reads.

Example::

    from vqtool.io import open_store
    with open_store("Wan2.1-T2V-1.3B/") as store:
        for name, info in store.infos().items():   # headers only
            print(name, info.shape, info.dtype)
        w = store.read("blocks.0.self_attn.q.weight")  # one tensor
"""

from vqtool.io.base import DTYPE_SIZES, FLOAT_DTYPES, TensorInfo, TensorStore, dtype_name, torch_dtype
from vqtool.io.gguf_file import GGUFFile
from vqtool.io.layout import Checkpoint, open_checkpoint, open_file, open_store, open_weights_in
from vqtool.io.safetensors_file import SafetensorsFile, read_header
from vqtool.io.sharded import MergedStore
from vqtool.io.torch_file import TorchFile, unwrap_state_dict

__all__ = [
    "Checkpoint", "DTYPE_SIZES", "FLOAT_DTYPES", "GGUFFile", "MergedStore", "SafetensorsFile", "TensorInfo",
    "TensorStore", "TorchFile", "dtype_name", "open_checkpoint", "open_file", "open_store", "open_weights_in",
    "read_header", "torch_dtype", "unwrap_state_dict",
]
