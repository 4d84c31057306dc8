"""``vqtool family``: every variant a publisher ships, from one pass over the source, validated, with the card.

GGUF policies are written together by :func:`vqtool.quant.run.quantize_model` (each source tensor
read once); torchao policies (``mappings/policies/40-torchao.toml``) are exported as Diffusers
folders next to them. With a reference pipeline, ``vqtool validate`` compares every variant with
the full-precision source into ``DIR/validation/``; the card (``DIR/README.md``) is rendered from
the files and that report, exactly as ``vqtool upload DIR`` will publish it.

Example::

    from vqtool.publish.family import make_family
    result = make_family("Wan2.1-T2V-1.3B/", "out/", ["q8_0", "q4_k_m", "mixed-q4", "int8-weight-only"],
                         pipeline="Wan2.1-T2V-1.3B-Diffusers/")
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from vqtool.errors import InputError, OutputExistsError
from vqtool.publish.card import CardInfo, render_card
from vqtool.publish.variants import CARD

log = logging.getLogger(__name__)

VALIDATION_DIR = "validation"
DEFAULT_POLICIES = ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "q3_k_m", "mixed-q8", "mixed-q4")


@dataclass
class FamilyOutput:
    policy: str
    kind: str  # gguf | torchao
    path: str
    bytes: int = 0
    bits_per_weight: float | None = None


@dataclass
class FamilyResult:
    folder: str
    outputs: list[FamilyOutput] = field(default_factory=list)
    report: str | None = None
    card: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "outputs": [o.__dict__ for o in self.outputs], "report": self.report,
                "card": self.card, "seconds": self.seconds, "warnings": self.warnings}


def split_policies(policies: list[str]) -> tuple[list[str], list[str]]:
    """(GGUF policies, torchao policies); unknown names raise with both lists of choices."""
    from vqtool.publish.torchao_export import torchao_policies
    from vqtool.quant.policy import get_policy

    torchao = torchao_policies()
    gguf, ao = [], []
    for p in policies:
        if p in torchao:
            ao.append(p)
        else:
            get_policy(p)  # raises PolicyError naming the built-in GGUF policies
            gguf.append(p)
    seen = set()
    dups = [p for p in policies if p in seen or seen.add(p)]
    if dups:
        raise InputError(f"policy {dups[0]!r} given twice")
    return gguf, ao


def source_stem(src: str) -> str:
    """The name outputs are called after: the source file or folder without weight extensions."""
    stem = os.path.basename(os.path.normpath(str(src).split(":", 1)[-1]))
    for ext in (".safetensors.index.json", ".safetensors", ".gguf", ".pt", ".pth", ".bin", ".ckpt"):
        stem = stem.removesuffix(ext)
    return stem


def output_paths(src: str, folder: str, gguf: list[str], torchao: list[str], name: str | None = None
                 ) -> list[tuple[str, str, str]]:
    """``(policy, kind, path)`` of every output: ``NAME-POLICY.gguf`` files and ``NAME-POLICY/`` folders."""
    stem = name or source_stem(src)
    policy_name = (lambda p: os.path.splitext(os.path.basename(p))[0] if p.endswith(".toml") else p)
    return ([(p, "gguf", os.path.join(folder, f"{stem}-{policy_name(p)}.gguf")) for p in gguf]
            + [(p, "torchao", os.path.join(folder, f"{stem}-{p}")) for p in torchao])


def _gguf_source(path: str) -> dict[str, Any]:
    """The source format, file names and hashes a vqtool GGUF recorded."""
    from vqtool.io import GGUFFile

    with GGUFFile(path) as store:
        meta = store.metadata
    files = list(meta.get("vqtool.source_files") or [])
    return {"format": meta.get("vqtool.source_format"), "files": files,
            "sha256": [meta.get(f"vqtool.source_sha256.{i}") for i in range(len(files))]}


def _run_validation(src: str, candidates: list[str], out: str, pipeline: str | None, options: dict[str, Any],
                    overwrite: bool) -> str:
    """``vqtool validate`` over the family; returns the report.json path (the one call into vqtool.validate)."""
    from vqtool.validate import validate

    validate(src, candidates, out, pipeline=pipeline, overwrite=overwrite, **options)
    return os.path.join(out, "report.json")


def write_card(folder: str, info: CardInfo, overwrite: bool = True) -> str:
    """Render the card of ``folder`` into ``folder/README.md`` (atomically); returns its path."""
    from vqtool.publish.variants import scan_folder

    path = os.path.join(folder, CARD)
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError("exists; pass --overwrite to replace it", path=path)
    text = render_card(scan_folder(folder), info)
    fd, tmp = tempfile.mkstemp(prefix=".README-", suffix=".md", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def make_family(src: str, folder: str, policies: list[str], *, pipeline: str | None = None,
                validate: bool = True, validate_options: dict[str, Any] | None = None,
                info: CardInfo | None = None, name: str | None = None, component: str | None = None,
                overwrite: bool = False, device: str | None = None, threads: int | None = None,
                torchao_dtype: str = "bf16", hash_sources: bool = True, progress: bool = True,
                validator: Callable[..., str] | None = None) -> FamilyResult:
    """Write every policy's variant of ``src`` into ``folder``, validate them and write the card.

    ``pipeline``: the Diffusers pipeline folder validation takes the text encoder, VAE and
    scheduler from (default: ``src`` itself when it is a pipeline folder). ``validate=False``
    skips validation (the card then shows n/a). ``validator`` replaces the call into
    ``vqtool validate`` (same arguments as :func:`_run_validation`).
    """
    from vqtool.publish.torchao_export import check_device, check_output, export_torchao
    from vqtool.quant.run import quantize_model

    gguf, torchao = split_policies(list(policies))
    if not gguf and not torchao:
        raise InputError("no policies given; e.g. --policies q8_0,q4_k_m,mixed-q4")
    for p in torchao:
        check_device(p, device or "cpu")
    folder = os.fspath(folder)
    targets = output_paths(src, folder, gguf, torchao, name)
    report_dir = os.path.join(folder, VALIDATION_DIR)
    for _, _, path in targets + [("", "", os.path.join(folder, CARD))] + ([("", "", report_dir)] if validate else []):
        check_output(path, overwrite)
    if validate and validator is None:
        needs = pipeline or src
        if not str(needs).startswith("bundled:") and not os.path.isfile(os.path.join(needs, "model_index.json")):
            raise InputError("validation needs a Diffusers pipeline folder (text encoder, VAE, scheduler): pass "
                             "--pipeline, or --no-validate to skip it", path=needs)
    os.makedirs(folder, exist_ok=True)
    result = FamilyResult(folder)
    started = time.perf_counter()
    if gguf:
        run = quantize_model(src, [(p, path) for p, kind, path in targets if kind == "gguf"], component=component,
                             overwrite=overwrite, device=device, threads=threads, hash_sources=hash_sources,
                             progress=progress)
        for o in run.outputs:
            result.outputs.append(FamilyOutput(o.policy, "gguf", o.path, o.bytes_written,
                                               round(o.plan.bits_per_weight, 3)))
        result.seconds["gguf"] = round(run.seconds, 3)
    source = _gguf_source(result.outputs[0].path) if result.outputs else None
    for p, kind, path in targets:
        if kind != "torchao":
            continue
        t0 = time.perf_counter()
        exp = export_torchao(src, path, p, component=component, dtype=torchao_dtype, device=device or "cpu",
                             overwrite=overwrite, hash_sources=hash_sources, source_info=source)
        source = exp.source  # the source is hashed once per family
        result.outputs.append(FamilyOutput(p, "torchao", path, exp.file_bytes, exp.bits_per_weight))
        result.seconds[f"torchao {p}"] = round(time.perf_counter() - t0, 3)
    if validate:
        t0 = time.perf_counter()
        run_validation = validator or _run_validation
        result.report = run_validation(src, [o.path for o in result.outputs], report_dir, pipeline,
                                       dict(validate_options or {}, progress=progress), overwrite)
        result.seconds["validate"] = round(time.perf_counter() - t0, 3)
    else:
        result.warnings.append("not validated: the card shows n/a for PSNR/SSIM")
    info = info or CardInfo(repo_id=f"ORG/{name or source_stem(src)}")
    result.card = write_card(folder, info, overwrite=True)  # checked above, before any work
    result.seconds["total"] = round(time.perf_counter() - started, 3)
    return result
