"""The SAT (SwissArmyTransformer) checkpoint folder layout used by CogVideoX.

Layout rules (reference checkpoint-formats.md §1.1, SAT ``sat/training/model_io.py``):

- ``transformer/latest`` is a text file naming the iteration, e.g. ``1``;
- ``transformer/<iter>/mp_rank_00_model_states.pt`` is ``torch.save({'module': state_dict})``
  with keys under ``model.diffusion_model.``; a *full fine-tune* file also carries the T5
  (``conditioner.embedders.0.transformer.*``, Hugging Face T5 names) and the VAE
  (``first_stage_model.*``);
- ``vae/3d-vae.pt`` is ``torch.save({'state_dict': state_dict})`` (Lightning style);
- ``t5-v1_1-xxl/`` (optional) is a plain transformers ``T5EncoderModel`` folder.

Components are separated by **prefix match** (CogVideo issue #633: slicing a fixed
number of characters turns ``conditioner.embedders.`` keys into transformer keys).
SAT's loader uses ``strict=False``: keys it does not find keep their initial values,
which is how it regenerates the sincos/rotary tables that conversions drop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from vqtool.errors import InputError, MappingError, OutputExistsError
from vqtool.io.base import TensorInfo, TensorStore

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

TRANSFORMER_FILE = "mp_rank_00_model_states.pt"
VAE_FILE = os.path.join("vae", "3d-vae.pt")
DEFAULT_ITERATION = "1"

# Component -> the prefix its keys carry inside the SAT transformer file (model_io / diffusion_video.py).
COMPONENT_PREFIXES: dict[str, str] = {
    "transformer": "model.diffusion_model.",
    "text_encoder": "conditioner.embedders.0.transformer.",
    "vae": "first_stage_model.",
}


class PrefixView(TensorStore):
    """The tensors of ``store`` whose names start with ``prefix``, named without it (nothing is copied)."""

    def __init__(self, store: TensorStore, prefix: str, component: str) -> None:
        super().__init__(store.path, store.format)
        self.base, self.prefix, self.component = store, prefix, component
        self.metadata = dict(store.metadata)
        self.config = store.config
        for name, info in store.infos().items():
            if name.startswith(prefix):
                short = name.removeprefix(prefix)
                self._infos[short] = TensorInfo(short, info.shape, info.dtype, info.file, info.nbytes, info.ggml_type)

    def _read(self, info: TensorInfo) -> "torch.Tensor":
        return self.base.read(self.prefix + info.name)

    def close(self) -> None:
        self.base.close()


def split_components(store: TensorStore) -> dict[str, TensorStore]:
    """Split a SAT transformer-file store into per-component views by key prefix.

    A file whose keys carry none of the prefixes is returned whole as the transformer
    (some tools save the bare ``diffusion_model`` state dict). Keys under no known prefix
    in a prefixed file are an error that lists them.
    """
    names = store.keys()
    counts = {c: sum(n.startswith(p) for n in names) for c, p in COMPONENT_PREFIXES.items()}
    if not any(counts.values()):
        return {"transformer": store}
    stray = [n for n in names if not any(n.startswith(p) for p in COMPONENT_PREFIXES.values())]
    if stray:
        shown = ", ".join(stray[:10]) + (f" ... (+{len(stray) - 10} more)" if len(stray) > 10 else "")
        raise MappingError(
            f"{len(stray)} keys are under none of the SAT prefixes ({', '.join(COMPONENT_PREFIXES.values())}): {shown}",
            path=store.path,
        )
    views = {c: PrefixView(store, COMPONENT_PREFIXES[c], c) for c, n in counts.items() if n}
    log.info("%s: SAT file components: %s", store.path, ", ".join(f"{c} ({counts[c]})" for c in views))
    return views


# Names SAT's LoraMixin (sat.model.finetune.lora2) gives a layer it wraps (reference §2).
LORA_MARKERS = (".matrix_A.", ".matrix_B.", "query_key_value.original.", "attention.dense.original.")


def check_not_lora(store: TensorStore) -> None:
    """Refuse a SAT LoRA checkpoint with a message that says what to do (its base weights sit under
    ``.original`` and the low-rank factors beside them: not a plain transformer)."""
    hits = [n for n in store.keys() if any(m in n for m in LORA_MARKERS)]
    if hits:
        raise MappingError(
            f"this is a SAT LoRA checkpoint ({len(hits)} LoRA tensors, e.g. {hits[0]}); merge the LoRA into the "
            "base weights first (SAT LoraMixin.merge_lora) and save again, or convert the base model alone",
            path=store.path)


def split_full_finetune(store: TensorStore) -> dict[str, TensorStore]:
    """``{"transformer": store}`` for a plain SAT transformer file; for a full fine-tune (keys under the
    T5 or VAE prefix too) the per-component views of :func:`split_components`."""
    others = tuple(p for c, p in COMPONENT_PREFIXES.items() if c != "transformer")
    if any(name.startswith(others) for name in store.keys()):
        return split_components(store)
    return {"transformer": store}


def open_sat(folder: str | os.PathLike) -> dict[str, TensorStore]:
    """The component stores of a SAT folder: transformer, and vae / text_encoder when present.

    ``vae/3d-vae.pt`` wins over ``first_stage_model.*`` keys and a ``t5*/`` folder over
    ``conditioner.*`` keys (:func:`vqtool.io.open_checkpoint` applies these rules).
    """
    from vqtool.io import open_checkpoint

    folder = os.fspath(folder)
    ckpt = open_checkpoint(folder)
    if ckpt.format != "sat":
        raise InputError(
            f"not a SAT folder (found {ckpt.format}); expected transformer/latest and "
            f"transformer/<iter>/{TRANSFORMER_FILE}", path=folder)
    if "transformer" not in ckpt.components or not len(ckpt.components["transformer"]):
        raise InputError("the SAT transformer file holds no model.diffusion_model.* keys", path=folder)
    return dict(ckpt.components)


def _atomic_torch_save(obj: object, path: str, overwrite: bool) -> None:
    import torch

    if os.path.exists(path) and not overwrite:
        raise OutputExistsError("exists; pass --overwrite to replace it", path=path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_transformer(folder: str | os.PathLike, tensors: Iterable[tuple[str, "torch.Tensor"]], *,
                      iteration: str = DEFAULT_ITERATION, overwrite: bool = False,
                      extra: dict[str, Iterable[tuple[str, "torch.Tensor"]]] | None = None) -> str:
    """Write ``transformer/<iteration>/mp_rank_00_model_states.pt`` as ``{'module': sd}``, then ``latest``.

    ``tensors`` are transformer keys without the prefix; ``model.diffusion_model.`` is added.
    ``extra`` maps other components ("text_encoder", "vae") to tensors written under their
    SAT prefix in the same file (a full fine-tune layout). ``latest`` is written last, as SAT
    does, so a reader never follows it to a half-written file. Returns the weights path.
    """
    folder = os.fspath(folder)
    state: dict[str, torch.Tensor] = {}
    for component, items in [("transformer", tensors), *(extra or {}).items()]:
        prefix = COMPONENT_PREFIXES[component]
        for name, tensor in items:
            state[prefix + name] = tensor.contiguous()
    path = os.path.join(folder, "transformer", str(iteration), TRANSFORMER_FILE)
    latest = os.path.join(folder, "transformer", "latest")
    if os.path.exists(latest) and not overwrite:
        raise OutputExistsError("exists; pass --overwrite to replace it", path=latest)
    _atomic_torch_save({"module": state}, path, overwrite)
    tmp = f"{latest}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"{iteration}\n")
    os.replace(tmp, latest)
    return path


def write_vae(folder: str | os.PathLike, tensors: Iterable[tuple[str, "torch.Tensor"]], *,
              overwrite: bool = False) -> str:
    """Write ``vae/3d-vae.pt`` as ``{'state_dict': sd}`` (SAT VAE names). Returns its path."""
    path = os.path.join(os.fspath(folder), VAE_FILE)
    _atomic_torch_save({"state_dict": {name: t.contiguous() for name, t in tensors}}, path, overwrite)
    return path
