"""Several files that together hold one component: shard sets and their indexes.

Handles ``*.safetensors.index.json`` and ``pytorch_model.bin.index.json`` indexes
(``weight_map`` name -> shard file) and un-indexed ``-00001-of-00003`` shard sets.
Only headers are read when the set is opened.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from vqtool.errors import CorruptFileError, MissingShardError
from vqtool.io.base import TensorInfo, TensorStore

if TYPE_CHECKING:  # pragma: no cover
    import torch

SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<idx>\d{5})-of-(?P<total>\d{5})(?P<ext>\.[A-Za-z]+)$")


class MergedStore(TensorStore):
    """A union of stores with disjoint tensor names (e.g. the shards of one checkpoint)."""

    def __init__(self, path: str | os.PathLike, format: str, parts: Sequence[TensorStore]) -> None:
        super().__init__(path, format)
        self._parts = list(parts)
        self._owner: dict[str, TensorStore] = {}
        for part in self._parts:
            for name, info in part.infos().items():
                if name in self._owner:
                    raise CorruptFileError(
                        f"tensor appears in two files ({self._owner[name].path} and {part.path}); "
                        "remove the duplicate shard",
                        path=self.path,
                        tensor=name,
                    )
                self._owner[name] = part
                self._infos[name] = info
            self.metadata.update(part.metadata)

    def _read(self, info: TensorInfo) -> "torch.Tensor":
        return self._owner[info.name].read(info.name)

    def close(self) -> None:
        for part in self._parts:
            part.close()


def open_index(index_path: str, open_file: Callable[[str], TensorStore], format: str) -> MergedStore:
    """Open a shard index; every shard it names must exist and hold the tensors it claims."""
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise CorruptFileError(
            "not a valid shard index (expected JSON with a 'weight_map' object)", path=index_path
        ) from None
    folder = os.path.dirname(os.path.abspath(index_path))
    by_shard: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(name)
    missing = [s for s in by_shard if not os.path.isfile(os.path.join(folder, s))]
    if missing:
        counts = ", ".join(f"{s} ({len(by_shard[s])} tensors)" for s in missing)
        raise MissingShardError(f"index names missing shard(s): {counts}; download the missing file(s)", path=index_path)
    parts = [open_file(os.path.join(folder, s)) for s in by_shard]
    for part, (shard, names) in zip(parts, by_shard.items()):
        absent = [n for n in names if n not in part]
        if absent:
            raise CorruptFileError(
                f"index says {len(absent)} tensor(s) are in {shard} but that shard lacks them "
                f"(first: {absent[0]}); the index and shards are from different exports",
                path=index_path,
            )
    store = MergedStore(index_path, format, parts)
    extra = set(store.infos()) - set(weight_map)
    if extra:
        raise CorruptFileError(
            f"shards hold {len(extra)} tensor(s) the index does not list (first: {sorted(extra)[0]})", path=index_path
        )
    store.metadata.update(index.get("metadata") or {})
    return store


def shard_sets(files: Sequence[str]) -> dict[str, list[str]]:
    """Group ``name-0000i-of-0000n.ext`` files by their common stem; checks none is missing."""
    groups: dict[tuple[str, str, str], dict[int, str]] = {}
    for path in files:
        m = SHARD_RE.match(os.path.basename(path))
        if m:
            key = (os.path.join(os.path.dirname(path), m["stem"]), m["total"], m["ext"])
            groups.setdefault(key, {})[int(m["idx"])] = path
    out: dict[str, list[str]] = {}
    for (stem, total, ext), members in groups.items():
        want = set(range(1, int(total) + 1))
        lost = sorted(want - set(members))
        if lost:
            names = ", ".join(f"{os.path.basename(stem)}-{i:05d}-of-{total}{ext}" for i in lost)
            raise MissingShardError(f"shard set is incomplete: missing {names}", path=os.path.dirname(stem) or ".")
        out[stem + ext] = [members[i] for i in sorted(members)]
    return out
