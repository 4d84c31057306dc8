"""Recognise what a path is (file, shard set, or one of the known folder layouts)
and open it as a :class:`Checkpoint` of named component stores.

Folder layouts, tried in this order (each declared by the files that identify it):

- ``diffusers-pipeline``: ``model_index.json`` plus one sub-folder per component;
- ``sat``: ``transformer/latest`` naming ``transformer/<iter>/mp_rank_00_model_states.pt``,
  ``vae/3d-vae.pt``, optional ``t5-v1_1-xxl/``;
- ``wan-original``: weights in the folder plus ``Wan2.1_VAE.pth`` and/or ``models_t5_*.pth``;
- ``diffusers-model``: ``config.json`` plus weights;
- ``weights-folder``: weights alone (a shard set or a single file).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from vqtool.errors import CorruptFileError, InputError, UnsupportedFormatError
from vqtool.io.base import TensorStore
from vqtool.io.gguf_file import GGUFFile
from vqtool.io.safetensors_file import SafetensorsFile
from vqtool.io.sharded import MergedStore, open_index, shard_sets
from vqtool.io.torch_file import TorchFile

TORCH_EXTS = (".pt", ".pth", ".bin", ".ckpt")
WAN_VAE_NAMES = ("Wan2.1_VAE.pth", "Wan2.2_VAE.pth")
WAN_PTH_COMPONENTS = (("models_t5_*.pth", "text_encoder"), ("models_clip_*.pth", "image_encoder"))


@dataclass
class Checkpoint:
    """A checkpoint as the user has it: a format name and its component stores."""

    path: str
    format: str
    components: dict[str, TensorStore] = field(default_factory=dict)
    extras: dict[str, str] = field(default_factory=dict)  # non-tensor parts (tokenizer, scheduler) -> path

    def close(self) -> None:
        for store in self.components.values():
            store.close()

    def __enter__(self) -> "Checkpoint":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_file(path: str) -> TensorStore:
    """Open one weights file by its magic bytes (extension as a tie-breaker)."""
    if not os.path.exists(path):
        raise InputError("no such file or folder", path=path)
    if not os.path.isfile(path):
        raise InputError("not a regular file", path=path)
    lower = path.lower()
    if lower.endswith(".index.json"):
        fmt = "torch-sharded" if ".bin." in lower or ".pt." in lower else "safetensors-sharded"
        opener: Callable[[str], TensorStore] = TorchFile if fmt == "torch-sharded" else SafetensorsFile
        return open_index(path, opener, fmt)
    with open(path, "rb") as f:
        magic = f.read(9)
    if magic[:4] == b"GGUF" or lower.endswith(".gguf"):
        return GGUFFile(path)
    if lower.endswith(".safetensors") or (len(magic) == 9 and magic[8:9] == b"{"):
        return SafetensorsFile(path)
    if lower.endswith(TORCH_EXTS) or magic[:2] == b"PK" or magic[:1] == b"\x80":
        return TorchFile(path)
    raise UnsupportedFormatError(
        "unknown file type; vqtool reads .safetensors, *.index.json, .gguf and torch pickles (.pt/.pth/.bin/.ckpt)",
        path=path,
    )


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"invalid JSON ({exc})", path=path) from None
    if not isinstance(data, dict):
        raise CorruptFileError("expected a JSON object", path=path)
    return data


def open_weights_in(folder: str, exclude: tuple[str, ...] = ()) -> TensorStore | None:
    """The weights of one model in a folder: an index, a shard set, or a single file."""
    for pattern in ("*.safetensors.index.json", "*.bin.index.json", "*.pt.index.json"):
        found = sorted(glob.glob(os.path.join(folder, pattern)))
        if found:
            return open_file(found[0])
    for ext in (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf"):
        files = sorted(
            p for p in glob.glob(os.path.join(folder, "*" + ext)) if os.path.basename(p) not in exclude
        )
        if not files:
            continue
        sets = shard_sets(files)
        if sets:
            stem, members = next(iter(sets.items()))
            fmt = "safetensors-sharded" if ext == ".safetensors" else f"{ext.lstrip('.')}-sharded"
            return MergedStore(stem, fmt, [open_file(p) for p in members])
        if len(files) == 1:
            return open_file(files[0])
        return MergedStore(folder, "multi-file", [open_file(p) for p in files])
    return None


def _model_folder(folder: str, fmt: str = "diffusers-model") -> TensorStore:
    store = open_weights_in(folder)
    if store is None:
        raise InputError("folder has a config.json but no weights (*.safetensors, *.bin, *.pt)", path=folder)
    cfg = os.path.join(folder, "config.json")
    if os.path.isfile(cfg):
        store.config = _read_json(cfg)
    store.format = f"{fmt}/{store.format}"
    return store


# config.json `_class_name` / `architectures` fragments -> component name.
CONFIG_COMPONENTS = (
    ("Transformer", "transformer"), ("WanModel", "transformer"), ("Autoencoder", "vae"),
    ("CLIPVision", "image_encoder"), ("EncoderModel", "text_encoder"), ("T5", "text_encoder"),
)


def component_from_config(config: dict | None) -> str:
    """The component a Diffusers/transformers ``config.json`` describes ("model" if unknown)."""
    if not config:
        return "model"
    names = [str(config.get("_class_name", ""))] + [str(a) for a in config.get("architectures") or []]
    for fragment, component in CONFIG_COMPONENTS:
        if any(fragment in n for n in names):
            return component
    return "model"


def _open_model_folder(folder: str) -> Checkpoint:
    store = _model_folder(folder)
    return Checkpoint(folder, "diffusers-model", {component_from_config(store.config): store})


def _open_pipeline(folder: str) -> Checkpoint:
    index = _read_json(os.path.join(folder, "model_index.json"))
    ckpt = Checkpoint(folder, "diffusers-pipeline")
    for name in sorted(index):
        if name.startswith("_"):
            continue
        sub = os.path.join(folder, name)
        if not os.path.isdir(sub):
            continue
        if os.path.isfile(os.path.join(sub, "config.json")) and open_weights_in(sub) is not None:
            ckpt.components[name] = _model_folder(sub)
        else:
            ckpt.extras[name] = sub
    if not ckpt.components:
        raise InputError("model_index.json found but no component folder holds weights", path=folder)
    return ckpt


def sat_transformer_file(folder: str) -> str:
    """``transformer/<latest>/mp_rank_00_model_states.pt`` of a SAT folder, following ``latest``."""
    tdir = os.path.join(folder, "transformer")
    latest = os.path.join(tdir, "latest")
    try:
        with open(latest, encoding="utf-8") as f:
            it = f.read().strip()
    except OSError as exc:
        raise InputError(f"cannot read SAT 'latest' file: {exc.strerror}", path=latest) from None
    path = os.path.join(tdir, it, "mp_rank_00_model_states.pt")
    if not os.path.isfile(path):
        raise InputError(
            f"SAT 'latest' says iteration '{it}' but {os.path.relpath(path, folder)} does not exist", path=folder
        )
    return path


def _open_sat(folder: str) -> Checkpoint:
    from vqtool.sat import split_full_finetune  # a full fine-tune also holds the T5 and VAE, by key prefix

    ckpt = Checkpoint(folder, "sat")
    ckpt.components.update(split_full_finetune(TorchFile(sat_transformer_file(folder))))
    vae = os.path.join(folder, "vae", "3d-vae.pt")
    if os.path.isfile(vae):
        ckpt.components["vae"] = TorchFile(vae)
    for t5 in sorted(glob.glob(os.path.join(folder, "t5*"))):
        if os.path.isdir(t5) and open_weights_in(t5) is not None:
            ckpt.components["text_encoder"] = _model_folder(t5)
            break
    return ckpt


def _open_wan(folder: str) -> Checkpoint:
    ckpt = Checkpoint(folder, "wan-original")
    pth_names: list[str] = []
    for name in WAN_VAE_NAMES:
        if os.path.isfile(os.path.join(folder, name)):
            ckpt.components["vae"] = TorchFile(os.path.join(folder, name))
            pth_names.append(name)
            break
    for pattern, component in WAN_PTH_COMPONENTS:
        found = sorted(glob.glob(os.path.join(folder, pattern)))
        if found:
            ckpt.components[component] = TorchFile(found[0])
            pth_names.append(os.path.basename(found[0]))
    store = open_weights_in(folder, exclude=tuple(pth_names))
    if store is not None:
        if os.path.isfile(os.path.join(folder, "config.json")):
            store.config = _read_json(os.path.join(folder, "config.json"))
        ckpt.components = {"transformer": store, **ckpt.components}
    return ckpt


def _is_wan_original(folder: str) -> bool:
    return any(os.path.isfile(os.path.join(folder, n)) for n in WAN_VAE_NAMES) or any(
        glob.glob(os.path.join(folder, p)) for p, _ in WAN_PTH_COMPONENTS
    )


# Folder layouts in detection order: (format, identifies?, opener).
FOLDER_LAYOUTS: list[tuple[str, Callable[[str], bool], Callable[[str], Checkpoint]]] = [
    ("diffusers-pipeline", lambda d: os.path.isfile(os.path.join(d, "model_index.json")), _open_pipeline),
    ("sat", lambda d: os.path.isfile(os.path.join(d, "transformer", "latest")), _open_sat),
    ("wan-original", _is_wan_original, _open_wan),
    (
        "diffusers-model",
        lambda d: os.path.isfile(os.path.join(d, "config.json")),
        _open_model_folder,
    ),
]


def open_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Open any input vqtool reads (file, index, shard folder, or known folder layout).

    ``bundled:NAME`` names a tiny model shipped with vqtool (see :mod:`vqtool.bundled`).
    Only headers are read; tensors are read later, one at a time.
    """
    path = os.fspath(path)
    if path.startswith("bundled:"):
        from vqtool.bundled import materialize

        path = materialize(path.split(":", 1)[1])
    if os.path.isdir(path):
        for fmt, identifies, opener in FOLDER_LAYOUTS:
            if identifies(path):
                return opener(path)
        store = open_weights_in(path)
        if store is None:
            raise UnsupportedFormatError(
                "folder holds no weights vqtool recognises (a Diffusers model/pipeline folder, a SAT folder, "
                "an original Wan folder, or safetensors/torch/GGUF files)",
                path=path,
            )
        return Checkpoint(path, "weights-folder", {"model": store})
    store = open_file(path)
    return Checkpoint(path, store.format, {"model": store})


def open_store(path: str | os.PathLike, component: str | None = None) -> TensorStore:
    """One component's store from any input (default: the only one, else ``transformer``)."""
    ckpt = open_checkpoint(path)
    names = list(ckpt.components)
    if component is None:
        if len(names) == 1:
            component = names[0]
        elif "transformer" in ckpt.components:
            component = "transformer"
        else:
            raise InputError(f"holds several components ({', '.join(names)}); choose one with --component", path=ckpt.path)
    if component not in ckpt.components:
        if len(names) == 1:
            return ckpt.components[names[0]]
        raise InputError(f"has no component '{component}' (it has: {', '.join(names)})", path=ckpt.path)
    for other, store in ckpt.components.items():
        if other != component:
            store.close()
    return ckpt.components[component]
