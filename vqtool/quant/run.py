"""``vqtool quantize`` as a library call: plan every policy, then stream the source once.

Each source tensor is read (and mapped to its canonical name) once, encoded for every
requested policy and written into each output GGUF at its slot; only one source tensor
and its encodings are in memory at a time. Source file hashes are computed on a
background thread while encoding and filled into the headers at the end.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vqtool.errors import VqtoolError
from vqtool.quant.plan import QuantPlan, TensorDecision, resolve
from vqtool.quant.policy import get_policy

log = logging.getLogger(__name__)

ARCHITECTURES = {"wan": "wan", "cogvideox": "cogvideox"}
HASH_FIELD = 64 + len("sha256:")
SLICE_ELEMENTS = 1 << 22  # 16 MB of float32 per encoding slice


@dataclass
class QuantOutput:
    policy: str
    path: str
    plan: QuantPlan
    bytes_written: int = 0


@dataclass
class QuantRun:
    """Everything one ``quantize`` call produced (returned to the CLI, printed with --json)."""

    source: str
    source_format: str
    outputs: list[QuantOutput] = field(default_factory=list)
    seconds: float = 0.0
    source_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "source_format": self.source_format, "seconds": round(self.seconds, 3),
            "source_bytes": self.source_bytes,
            "mb_per_s": round(self.source_bytes / 1e6 / self.seconds, 2) if self.seconds else None,
            "outputs": [
                {"policy": o.policy, "path": o.path, "file_size": os.path.getsize(o.path) if os.path.exists(o.path) else None,
                 **o.plan.to_dict(tensors=False)}
                for o in self.outputs
            ],
        }


def sha256_files(paths: list[str], out: dict[str, str]) -> None:
    for path in paths:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        out[path] = "sha256:" + h.hexdigest()


def plan_policies(store, policies: list[str], overrides: list[str] = ()) -> tuple[Any, list[QuantPlan]]:
    """Identify ``store`` and resolve each policy over its canonical graph (no data read)."""
    from vqtool.mapping import build_graph

    graph = build_graph(store)
    if graph.component != "transformer":
        raise VqtoolError(f"quantize works on transformers; this is a {graph.family} {graph.component}")
    return graph, [resolve(get_policy(p).with_overrides(list(overrides)), graph) for p in policies]


def _encode(tensor, decision: TensorDecision, imatrix, device, threads) -> np.ndarray:
    import torch

    t = decision.type
    if t == "F32":
        return tensor.to(torch.float32).contiguous().numpy()
    if t == "F16":
        return tensor.to(torch.float16).contiguous().numpy()
    if t == "BF16":
        return tensor.to(torch.bfloat16).contiguous().view(torch.int16).numpy()
    from vqtool import ggml
    from vqtool.quant.imatrix import lookup

    # Row slices of at most SLICE_ELEMENTS are widened to float32 one at a time, so the
    # peak is the source tensor plus one slice, not a full float32 copy of the tensor.
    n = decision.shape[-1]
    rows = tensor.reshape(-1, n)
    qw = lookup(imatrix, decision.name, n)
    out = np.empty((rows.shape[0], ggml.row_size(t, n)), dtype=np.uint8)
    step = max(1, SLICE_ELEMENTS // n)
    for a in range(0, rows.shape[0], step):
        x = rows[a : a + step].to(torch.float32)
        out[a : a + step] = ggml.quantize(x if device not in (None, "cpu") else x.numpy(), t, qw, name=decision.name,
                                          threads=threads, device=device, row_offset=a)
    return out


def _metadata(out, plan: QuantPlan, source: str, source_format: str, files: list[str], imatrix_path: str | None,
              display_name: str, source_config: dict | None = None) -> None:
    import gguf

    from vqtool import __version__

    out.add("general.name", display_name)
    file_type = plan.policy.file_type
    if file_type:
        out.add("general.file_type", int(gguf.LlamaFileType[file_type]))
    out.add("general.quantization_version", gguf.GGML_QUANT_VERSION)
    out.add("vqtool.version", __version__)
    out.add("vqtool.family", plan.family)
    out.add("vqtool.variant", plan.variant)
    out.add("vqtool.component", plan.component)
    out.add("vqtool.config", json.dumps(plan.config, sort_keys=True))
    out.add("vqtool.source_format", source_format)
    if source_config:
        # The source's own config.json: sizes that shapes cannot tell (sample size, text length).
        out.add("vqtool.source_config", json.dumps(source_config, sort_keys=True))
    out.add("vqtool.source_files", [os.path.basename(f) for f in files])
    for i in range(len(files)):
        out.placeholder(f"vqtool.source_sha256.{i}", HASH_FIELD)
    out.add("vqtool.policy.name", plan.policy.name)
    out.add("vqtool.policy", json.dumps(plan.policy.to_dict(), sort_keys=True))
    out.add("vqtool.plan", json.dumps(
        {d.name: {"role": d.role, "requested": d.requested, "type": d.type, "rule": d.rule,
                  **({"fallback": list(d.fallback)} if d.fallback else {})}
         for d in plan.decisions}, sort_keys=True))
    if imatrix_path:
        out.add("vqtool.imatrix", os.path.basename(imatrix_path))


def quantize_model(
    src: str,
    outputs: list[tuple[str, str]],
    *,
    component: str | None = None,
    overrides: list[str] = (),
    imatrix: str | None = None,
    overwrite: bool = False,
    device: str | None = None,
    threads: int | None = None,
    hash_sources: bool = True,
    progress: bool = True,
    on_tensor: Callable[[int, str, Any, TensorDecision, np.ndarray], None] | None = None,
) -> QuantRun:
    """Quantize ``src`` into one GGUF per ``(policy, out_path)``, reading each source tensor once.

    ``on_tensor(output index, name, source tensor, decision, encoded bytes)`` is called after each
    tensor is written (the quantization-recovery LoRA of ``--recovery-rank`` is built this way).
    """
    from tqdm import tqdm

    from vqtool.io import open_store
    from vqtool.mapping import convert_to_canonical
    from vqtool.quant.gguf_out import GGUFOut
    from vqtool.quant.imatrix import load_imatrix

    started = time.perf_counter()
    with open_store(src, component) as store:
        graph, plans = plan_policies(store, [p for p, _ in outputs], list(overrides))
        qw = load_imatrix(imatrix) if imatrix else None
        files = store.files
        run = QuantRun(source=os.fspath(src), source_format=store.format)
        arch = ARCHITECTURES.get(graph.family, graph.family)
        display = os.path.basename(os.path.normpath(os.fspath(src)))
        outs: list[GGUFOut] = []
        try:
            for (policy_name, path), plan in zip(outputs, plans):
                out = GGUFOut(path, arch, overwrite=overwrite)
                outs.append(out)
                run.outputs.append(QuantOutput(policy_name, path, plan))
                _metadata(out, plan, os.fspath(src), store.format, files, imatrix, f"{display} {plan.policy.name}",
                          store.config)
                for d in plan.decisions:
                    out.add_tensor(d.name, d.shape, d.type, d.nbytes)
                out.open()
            hashes: dict[str, str] = {}
            hasher = threading.Thread(target=sha256_files, args=(files, hashes), daemon=True) if hash_sources else None
            if hasher:
                hasher.start()
            decisions = [{d.name: d for d in plan.decisions} for plan in plans]
            total = sum(i.nbytes for i in store.infos().values())
            run.source_bytes = total
            bar = tqdm(total=total, unit="B", unit_scale=True, desc="quantize", disable=not progress, leave=False)
            for name, tensor in convert_to_canonical(store):
                for i, (out, table) in enumerate(zip(outs, decisions)):
                    encoded = _encode(tensor, table[name], qw, device, threads)
                    out.write_tensor(name, encoded)
                    if on_tensor is not None:
                        on_tensor(i, name, tensor, table[name], encoded)
                bar.update(tensor.numel() * tensor.element_size())
                bar.set_postfix_str(name[-40:], refresh=False)
                del tensor
            bar.close()
            if hasher:
                hasher.join()
            for out in outs:
                for i, f in enumerate(files):
                    out.fill(f"vqtool.source_sha256.{i}", hashes.get(f, "sha256:skipped"))
                out.commit()
        except BaseException:
            for out in outs:
                out.abort()
            raise
    for o in run.outputs:
        o.bytes_written = os.path.getsize(o.path)
    run.seconds = time.perf_counter() - started
    return run
