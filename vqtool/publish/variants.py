"""What a publish folder holds: quantized variants, LoRAs, validation reports, and what is left out.

:func:`scan_folder` reads headers only (GGUF metadata, safetensors headers, ``config.json`` and the
``vqtool.json`` of torchao exports) and sorts every file into something to publish or a skipped
file with the reason, so nothing is dropped silently.

Example::

    scan = scan_folder("out/")
    [(v.name, v.policy, v.bits_per_weight) for v in scan.variants]
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from vqtool.errors import VqtoolError

log = logging.getLogger(__name__)

LORA_MARKERS = (".lora_A.", ".lora_B.", ".lora_down.", ".lora_up.", "lora_A.weight", "lora_down.weight")
CARD = "README.md"


@dataclass
class Variant:
    """One published artifact: a GGUF file, a torchao folder or a LoRA."""

    kind: str  # "gguf" | "torchao" | "lora"
    name: str  # path relative to the publish folder (a folder for torchao)
    path: str
    files: list[str]  # relative paths of every file it consists of
    bytes: int
    policy: str | None = None
    description: str = ""
    keeps: str = ""
    bits_per_weight: float | None = None
    params: int | None = None
    family: str | None = None
    variant: str | None = None
    source: dict[str, Any] = field(default_factory=dict)  # format, files, sha256
    roles: dict[str, dict[str, int]] = field(default_factory=dict)  # role -> type -> 2-D weights
    note: str = ""

    @property
    def key(self) -> str:
        """What validation reports call it: the base name of the file or folder."""
        return os.path.basename(os.path.normpath(self.path))


@dataclass
class Scan:
    folder: str
    variants: list[Variant] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)  # report.json paths
    report_files: list[str] = field(default_factory=list)  # relative paths of everything in report folders
    extra: list[str] = field(default_factory=list)  # files added by --include
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, why)

    def upload_files(self) -> list[str]:
        """Relative paths of every file to upload (the card is added separately)."""
        out = [f for v in self.variants for f in v.files] + self.report_files + self.extra
        return sorted(dict.fromkeys(out))


def _role_types(decisions: dict[str, dict[str, Any]], shapes: dict[str, tuple[int, ...]]) -> dict[str, dict[str, int]]:
    roles: dict[str, Counter] = {}
    for name, d in decisions.items():
        if name.endswith("weight") and len(shapes.get(name, ())) == 2:
            roles.setdefault(d.get("role", "unknown"), Counter())[d["type"]] += 1
    return {r: dict(c) for r, c in sorted(roles.items())}


def gguf_variant(path: str, rel: str) -> Variant:
    """A GGUF file: policy, sizes and types by role from vqtool's metadata (headers only)."""
    from vqtool.io import GGUFFile

    with GGUFFile(path) as store:
        meta = store.metadata
        infos = store.infos()
        params = sum(_numel(i.shape) for i in infos.values())
        tensor_bytes = sum(i.nbytes for i in infos.values())
        shapes = {n: i.shape for n, i in infos.items()}
        v = Variant("gguf", rel, path, [rel], os.path.getsize(path), params=params,
                    bits_per_weight=round(8 * tensor_bytes / params, 3) if params else None)
        v.family, v.variant = meta.get("vqtool.family"), meta.get("vqtool.variant")
        policy = _json(meta.get("vqtool.policy"))
        v.policy = meta.get("vqtool.policy.name") or policy.get("name")
        v.description, v.keeps = policy.get("description", ""), policy.get("keeps", "")
        files = meta.get("vqtool.source_files") or []
        v.source = {"format": meta.get("vqtool.source_format"), "files": list(files),
                    "sha256": [meta.get(f"vqtool.source_sha256.{i}") for i in range(len(files))]}
        plan = _json(meta.get("vqtool.plan"))
        if plan:
            v.roles = _role_types(plan, shapes)
        else:  # not written by vqtool: types without roles
            types = Counter(i.ggml_type or i.dtype for n, i in infos.items() if n.endswith("weight") and len(i.shape) == 2)
            v.roles = {"(all 2-D weights)": dict(types)}
            v.note = "not written by vqtool: no per-role plan in its metadata"
    return v


def torchao_variant(path: str, rel: str, folder_files: list[str]) -> Variant:
    from vqtool.publish.torchao_export import read_provenance

    size = sum(os.path.getsize(os.path.join(path, f)) for f in folder_files)
    files = [os.path.join(rel, f).replace(os.sep, "/") for f in folder_files]
    v = Variant("torchao", rel, path, files, size)
    prov = read_provenance(path)
    if prov is None:
        with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
            quant = json.load(f).get("quantization_config") or {}
        v.policy = "torchao " + ", ".join(t.get("_type", "?") for t in (quant.get("quant_type") or {}).values())
        v.note = "no vqtool.json: not exported by vqtool"
        return v
    from vqtool.publish.torchao_export import get_torchao_policy

    v.policy, v.family, v.variant = prov.get("policy"), prov.get("family"), prov.get("variant")
    v.params, v.bits_per_weight = prov.get("params"), prov.get("bits_per_weight")
    v.source = dict(prov.get("source") or {})
    weights = prov.get("weights") or {}
    v.roles = _role_types(weights, {n: tuple(w["shape"]) for n, w in weights.items()})
    try:
        pol = get_torchao_policy(v.policy or "")
        v.description = pol.description
    except VqtoolError:
        v.description = prov.get("config", "")
    v.keeps = (f"the Linear layers of the roles every policy keeps unquantized, in {prov.get('dtype')} "
               "(float32 where diffusers keeps a module in float32)")
    return v


def lora_variant(path: str, rel: str) -> Variant:
    """A LoRA (safetensors with lora_A/B or lora_down/up keys, or a GGUF adapter): rank and targets."""
    from vqtool.io import open_file

    with open_file(path) as store:
        infos = store.infos()
        downs = [i for n, i in infos.items() if "lora_A" in n or "lora_down" in n]
        ranks = sorted({i.shape[0] for i in downs if i.shape})
        v = Variant("lora", rel, path, [rel], os.path.getsize(path), policy="LoRA",
                    params=sum(_numel(i.shape) for i in infos.values()))
        v.family = store.metadata.get("vqtool.family")
        v.note = f"{len(downs)} adapted layers, rank {'/'.join(map(str, ranks)) or '?'}"
        v.description = str(store.metadata.get("vqtool.lora.description") or store.metadata.get("general.description") or "")
    return v


def is_lora(path: str) -> bool:
    from vqtool.io import open_file

    with open_file(path) as store:
        if store.metadata.get("general.type") == "adapter":
            return True
        return any(any(m in n for m in LORA_MARKERS) for n in store.keys())


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _json(text: Any) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return {}
    return value if isinstance(value, dict) else {}


def _files_under(folder: str) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        out += [os.path.relpath(os.path.join(root, f), folder) for f in sorted(files) if not f.startswith(".")]
    return out


def scan_folder(folder: str | os.PathLike, include: tuple[str, ...] = (), card: str | None = None) -> Scan:
    """Sort every file under ``folder`` into variants, reports, ``include``-d extras and skipped files."""
    from vqtool.publish.reports import REPORT_NAME
    from vqtool.publish.torchao_export import is_torchao_folder

    folder = os.fspath(folder)
    scan = Scan(folder)
    claimed: set[str] = set()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel_root = os.path.relpath(root, folder)
        rel = (lambda f: f if rel_root == "." else os.path.join(rel_root, f).replace(os.sep, "/"))
        if rel_root != "." and is_torchao_folder(root):
            inside = _files_under(root)
            scan.variants.append(torchao_variant(root, rel_root.replace(os.sep, "/"), inside))
            claimed.update(rel(f) for f in inside)
            dirs[:] = []
            continue
        if REPORT_NAME in files:
            scan.reports.append(os.path.join(root, REPORT_NAME))
            inside = [rel(f) for f in _files_under(root) if not f.endswith(".gguf")]
            scan.report_files += [f for f in inside if f not in claimed]
            claimed.update(inside)
        for f in sorted(files):
            r = rel(f)
            if f.startswith(".") or r in claimed:
                continue
            full = os.path.join(root, f)
            if f.endswith(".gguf"):
                scan.variants.append(lora_variant(full, r) if is_lora(full) else gguf_variant(full, r))
            elif f.endswith(".safetensors") and is_lora(full):
                scan.variants.append(lora_variant(full, r))
            elif any(fnmatch.fnmatch(r, pat) for pat in include):
                scan.extra.append(r)
            elif r == CARD:
                scan.skipped.append((r, "replaced by the generated model card" if card is None else
                                     f"replaced by --card {card}"))
            else:
                scan.skipped.append((r, "not a GGUF file, torchao folder, LoRA or report; add it with --include"))
            claimed.add(r)
    scan.variants.sort(key=lambda v: ({"gguf": 0, "torchao": 1, "lora": 2}[v.kind], -(v.bits_per_weight or 0), v.name))
    return scan
