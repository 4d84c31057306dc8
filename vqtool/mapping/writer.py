"""Write a conversion plan as safetensors, streaming, sharded past a size, atomically.

The header of each shard is computed from the plan (names, shapes, dtypes), so tensors are
written the moment they are produced and dropped right after: peak memory is one conversion
unit, not the model. Files are written under temporary names in the target folder and renamed
into place only when every shard is complete; existing outputs are replaced only with
``overwrite=True``.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from vqtool.errors import MappingError, OutputExistsError
from vqtool.mapping.plan import ConversionPlan, PlannedTensor, iter_converted

log = logging.getLogger(__name__)

DEFAULT_MAX_SHARD = 5 * 10**9  # like diffusers / transformers "5GB"
_UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str | int) -> int:
    """``"5GB"`` -> 5_000_000_000; ``"512MiB"``; plain integers are bytes."""
    if isinstance(text, int):
        return text
    s = text.strip().upper().replace(" ", "")
    for unit in sorted(_UNITS, key=len, reverse=True):
        if s.endswith(unit) and s[: -len(unit)]:
            try:
                return int(float(s[: -len(unit)]) * _UNITS[unit])
            except ValueError:
                break
    try:
        return int(s)
    except ValueError:
        raise MappingError(f"cannot read size {text!r}; write e.g. 5GB, 500MB or 2GiB") from None


@dataclass
class WriteResult:
    files: list[str] = field(default_factory=list)
    index: str | None = None
    config: str | None = None
    total_bytes: int = 0
    tensors: int = 0

    def to_dict(self) -> dict:
        return {"files": self.files, "index": self.index, "config": self.config,
                "total_bytes": self.total_bytes, "tensors": self.tensors}


def shard_tensors(tensors: list[PlannedTensor], max_bytes: int) -> list[list[PlannedTensor]]:
    """Greedy split in plan order; a tensor larger than ``max_bytes`` gets a shard of its own."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for t in tensors:
        if shards[-1] and size + t.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(t)
        size += t.nbytes
    return shards


def _header(tensors: list[PlannedTensor], metadata: dict[str, str]) -> bytes:
    header: dict = {"__metadata__": metadata}
    offset = 0
    for t in tensors:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _targets(out: str, basename: str, n_shards: int) -> tuple[str, str, list[str], str | None]:
    """(folder, stem, shard file names, index name or None) for an output path."""
    if out.endswith(".safetensors"):
        folder, stem = os.path.dirname(os.path.abspath(out)), os.path.basename(out)[: -len(".safetensors")]
    else:
        folder, stem = os.path.abspath(out), basename
    if n_shards == 1:
        return folder, stem, [f"{stem}.safetensors"], None
    return folder, stem, [f"{stem}-{i + 1:05d}-of-{n_shards:05d}.safetensors" for i in range(n_shards)], \
        f"{stem}.safetensors.index.json"


def _stale(folder: str, stem: str) -> list[str]:
    pats = [f"{stem}.safetensors", f"{stem}-*-of-*.safetensors", f"{stem}.safetensors.index.json"]
    return sorted({p for pat in pats for p in glob.glob(os.path.join(glob.escape(folder), pat))})


def write_tensors(items: Iterable[tuple[str, "torch.Tensor"]], tensors: list[PlannedTensor], out: str, *,  # noqa: F821
                  basename: str = "model", max_shard_size: int | str = DEFAULT_MAX_SHARD,
                  overwrite: bool = False, config_json: dict | None = None,
                  metadata: dict[str, str] | None = None, progress: bool = True) -> WriteResult:
    """Stream ``items`` (which must follow ``tensors``' order, names, shapes and dtypes) into safetensors."""
    import torch
    from tqdm import tqdm

    shards = shard_tensors(tensors, parse_size(max_shard_size))
    folder, stem, names, index_name = _targets(os.fspath(out), basename, len(shards))
    final = [os.path.join(folder, n) for n in names]
    extra = ([os.path.join(folder, index_name)] if index_name else []) + (
        [os.path.join(folder, "config.json")] if config_json is not None else [])
    existing = [p for p in final + extra + _stale(folder, stem) if os.path.exists(p)]
    if existing and not overwrite:
        raise OutputExistsError(f"output exists ({', '.join(sorted(set(existing))[:3])}); pass --overwrite to replace it",
                                path=out)
    os.makedirs(folder, exist_ok=True)
    meta = {"format": "pt", **(metadata or {})}
    tmp_paths: list[str] = []
    result = WriteResult(total_bytes=sum(t.nbytes for t in tensors), tensors=len(tensors))
    it = iter(items)
    bar = tqdm(total=result.total_bytes, unit="B", unit_scale=True, desc="writing", disable=not progress)
    try:
        for shard, path in zip(shards, final):
            tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
            tmp_paths.append(tmp)
            with open(tmp, "wb") as f:
                f.write(_header(shard, meta))
                for planned in shard:
                    name, tensor = next(it)
                    _check(planned, name, tensor)
                    data = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
                    f.write(memoryview(data))
                    bar.update(planned.nbytes)
                    del tensor, data
        if next(it, None) is not None:
            raise MappingError("the converter produced more tensors than planned (internal error)")
        small = []
        if index_name:
            weight_map = {t.name: names[i] for i, shard in enumerate(shards) for t in shard}
            small.append((index_name, json.dumps({"metadata": {"total_size": result.total_bytes},
                                                  "weight_map": weight_map}, indent=2)))
        if config_json is not None:
            small.append(("config.json", json.dumps(config_json, indent=2)))
        for fname, text in small:
            tmp = os.path.join(folder, f".{fname}.tmp-{os.getpid()}")
            tmp_paths.append(tmp)
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text + "\n")
        keep = set(final + extra)
        for stale in _stale(folder, stem):
            if stale not in keep:
                os.remove(stale)  # only reached with overwrite: an older shard set of the same name
        for tmp, dst in zip(tmp_paths, final + [os.path.join(folder, n) for n, _ in small]):
            os.replace(tmp, dst)
        tmp_paths = []
    finally:
        bar.close()
        for tmp in tmp_paths:
            if os.path.exists(tmp):
                os.remove(tmp)
    result.files = final
    result.index = os.path.join(folder, index_name) if index_name else None
    result.config = os.path.join(folder, "config.json") if config_json is not None else None
    return result


def _check(planned: PlannedTensor, name: str, tensor) -> None:
    from vqtool.io.base import dtype_name

    got = (name, tuple(tensor.shape), dtype_name(tensor.dtype))
    want = (planned.name, planned.shape, planned.dtype)
    if got != want:
        raise MappingError(f"converter produced {got}, the plan says {want} (internal error)")


def write_plan(store, plan: ConversionPlan, out: str | os.PathLike, **kwargs) -> WriteResult:
    """Convert ``store`` by ``plan`` into ``out`` (a folder, or a ``.safetensors`` file path).

    Keyword arguments as :func:`write_tensors`; ``config.json`` is written when the target
    format declares one (Diffusers). Example::

        plan = plan_conversion(store, "diffusers")
        write_plan(store, plan, "out/transformer", max_shard_size="2GB")
    """
    kwargs.setdefault("config_json", plan.config_json if not os.fspath(out).endswith(".safetensors") else None)
    return write_tensors(iter_converted(store, plan), plan.tensors, os.fspath(out),
                         basename=plan.target_table.basename, **kwargs)
