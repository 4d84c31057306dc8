"""``vqtool quantize --format torchao``: a Diffusers model folder quantized with torchao.

The source (any transformer vqtool reads) is streamed through the mapping tables into the Diffusers
model class one tensor at a time, and each tensor goes through diffusers' own torchao quantizer
(what ``from_pretrained(..., quantization_config=TorchAoConfig(...))`` does) as it arrives, so
memory is the quantized model plus one tensor and no full-precision Diffusers copy is written.
``save_pretrained`` writes safetensors (torchao >= 0.16 flattens its tensor subclasses); the result
reloads with plain ``from_pretrained`` and carries ``vqtool.json`` (policy, what stayed in high
precision, source files and hashes) for model cards. Policies are data:
``mappings/policies/40-torchao.toml``.

Example::

    from vqtool.publish.torchao_export import export_torchao, load_torchao_transformer
    result = export_torchao("Wan2.1-T2V-1.3B/", "wan-int8/", "int8-weight-only")
    model = load_torchao_transformer("wan-int8/")
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from vqtool.errors import InputError, OutputExistsError, PolicyError
from vqtool.publish.torchao_policy import (DTYPES, TorchaoPolicy, get_torchao_policy, torchao_policies,  # noqa: F401
                                           torchao_version, type_label)

log = logging.getLogger(__name__)

PROVENANCE = "vqtool.json"


@dataclass
class TorchaoExport:
    """What one export wrote (``--json`` output and the ``vqtool.json`` provenance file)."""

    path: str
    policy: str
    config: str
    family: str
    variant: str
    dtype: str
    params: int
    file_bytes: int = 0
    quantized: list[str] = field(default_factory=list)  # Linear modules torchao quantized
    kept: dict[str, str] = field(default_factory=dict)  # module -> role, kept in ``dtype`` by the policy
    weights: dict[str, dict[str, Any]] = field(default_factory=dict)  # 2-D weight -> role, shape, type written
    source: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def bits_per_weight(self) -> float:
        return round(8 * self.file_bytes / self.params, 4) if self.params else 0.0

    def to_dict(self) -> dict[str, Any]:
        from vqtool import __version__

        return {"format": "torchao", "vqtool_version": __version__, **asdict(self),
                "bits_per_weight": self.bits_per_weight, "torchao_version": torchao_version()}


def weight_roles(plan, graph) -> dict[str, str]:
    """Diffusers weight name -> the role of its canonical tensor (a fused group takes its first role)."""
    roles = {t.name: (t.role.value if hasattr(t.role, "value") else str(t.role)) for t in graph.tensors}
    out: dict[str, str] = {}
    for unit in plan.units:
        for group in unit.target:
            role = roles[group.canonical[0]]
            for name in group.external:
                if name.endswith(".weight"):
                    out[name] = role
    return out


def kept_modules(roles: dict[str, str], keep_roles: tuple[str, ...]) -> dict[str, str]:
    """Module name -> role, for every weight whose role the policy keeps in high precision."""
    return {name[: -len(".weight")]: role for name, role in roles.items()
            if any(fnmatch.fnmatchcase(role, k) for k in keep_roles)}


@dataclass
class TorchaoPlan:
    """What an export will do, known from headers: the Diffusers class and config, each weight's fate."""

    policy: TorchaoPolicy
    family: str
    variant: str
    params: int
    config: dict[str, Any]  # the Diffusers config.json diffusers will build the model from
    roles: dict[str, str]  # Diffusers weight name -> role
    shapes: dict[str, tuple[int, ...]]
    kept: dict[str, str]  # module -> role the policy keeps unquantized

    def by_role(self) -> dict[str, dict[str, int]]:
        """role -> {"quantize": n, "keep": n} over 2-D weights (Linear layers torchao may quantize)."""
        out: dict[str, dict[str, int]] = {}
        for name, role in sorted(self.roles.items(), key=lambda kv: kv[1]):
            if len(self.shapes.get(name, ())) != 2:
                continue
            action = "keep" if name[: -len(".weight")] in self.kept else "quantize"
            row = out.setdefault(role, {"quantize": 0, "keep": 0})
            row[action] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.name, "config": self.policy.config, "args": self.policy.args,
                "family": self.family, "variant": self.variant, "class": self.config.get("_class_name"),
                "params": self.params, "by_role": self.by_role(), "kept_modules": sorted(self.kept)}


def plan_torchao(store, policy: str) -> tuple[TorchaoPlan, Any]:
    """Plan exporting ``store`` with torchao ``policy`` (no tensor read); also returns the Diffusers conversion plan."""
    from vqtool.mapping import identify, plan_conversion

    pol = get_torchao_policy(policy)
    ident = identify(store)
    if ident is None or ident.graph.component != "transformer":
        raise InputError("torchao export works on transformers vqtool recognises; run `vqtool inspect` on it",
                         path=store.path)
    conversion = plan_conversion(store, "diffusers", ident=ident)
    graph = ident.graph
    config = dict(conversion.config_json or {})
    if store.config and store.config.get("_class_name") == config.get("_class_name"):
        config.update(store.config)
    if "_class_name" not in config:
        raise InputError("no Diffusers config for this transformer", path=store.path)
    roles = weight_roles(conversion, graph)
    plan = TorchaoPlan(pol, graph.family, graph.variant, graph.num_params(), config, roles,
                       {t.name: tuple(t.shape) for t in conversion.tensors}, kept_modules(roles, pol.roles_kept()))
    return plan, conversion


def _source_info(store) -> dict[str, Any]:
    from vqtool.quant.run import sha256_files

    hashes: dict[str, str] = {}
    sha256_files(list(store.files), hashes)
    return {"format": store.format, "files": [os.path.basename(f) for f in store.files],
            "sha256": [hashes[f] for f in store.files]}


def check_device(policy: str, device: str) -> TorchaoPolicy:
    """The policy named ``policy``, if torchao can quantize and run it on ``device``."""
    pol = get_torchao_policy(policy)
    if str(device).split(":")[0] not in pol.devices:
        raise PolicyError(f"torchao policy {pol.name} runs on {', '.join(pol.devices)}, not {device}: "
                          f"{pol.description}")
    return pol


def check_output(out: str, overwrite: bool) -> None:
    if os.path.exists(out) and not overwrite:
        raise OutputExistsError("exists; pass --overwrite to replace it", path=out)


def replace_folder(tmp: str, out: str) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an old ``out`` only once ``tmp`` is complete."""
    old = None
    if os.path.exists(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out) or ".")
        os.rmdir(old)
        os.replace(out, old)
    os.replace(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True) if os.path.isdir(old) else os.remove(old)


def export_torchao(src: str | os.PathLike, out: str | os.PathLike, policy: str = "int8-weight-only", *,
                   component: str | None = None, dtype: str = "bf16", device: str = "cpu",
                   overwrite: bool = False, hash_sources: bool = True, progress: bool = False,
                   max_shard_size: str = "2GB", source_info: dict[str, Any] | None = None) -> TorchaoExport:
    """Quantize the transformer in ``src`` with torchao ``policy`` into the Diffusers folder ``out``.

    ``dtype`` (bf16, f16, f32) is what unquantized weights and activations use; ``device``
    where torchao quantizes (some policies need ``cuda``); ``source_info`` (format, files,
    sha256) skips hashing the source again. Returns what was written.
    """
    import torch

    from vqtool.io import open_store

    started = time.perf_counter()
    pol = check_device(policy, device)
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use bf16, f16 or f32")
    out = os.fspath(out)
    check_output(out, overwrite)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}-", dir=parent)
    try:
        with open_store(src, component) as store:
            plan, conversion = plan_torchao(store, policy)
            result = TorchaoExport(out, pol.name, pol.config, plan.family, plan.variant, DTYPES[dtype], plan.params,
                                   kept=plan.kept)
            if source_info is not None:  # already hashed by the caller (vqtool family: one hash per source)
                result.source = dict(source_info)
            else:
                result.source = _source_info(store) if hash_sources else {
                    "format": store.format, "files": [os.path.basename(f) for f in store.files]}
            model, written = _stream_quantize(store, conversion, plan, getattr(torch, DTYPES[dtype]), device, progress)
        # Shards bound the serialization buffer safetensors builds in memory (one shard at a time).
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size=max_shard_size)
        del model
        result.quantized = sorted(n[: -len(".weight")] for n, t in written.items() if t == type_label(pol.config))
        result.weights = {n: {"role": plan.roles[n], "shape": list(plan.shapes[n]), "type": t}
                          for n, t in written.items() if n in plan.roles}
        result.file_bytes = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp)
                                if f.endswith(".safetensors"))
        result.seconds = round(time.perf_counter() - started, 3)
        with open(os.path.join(tmp, PROVENANCE), "w", encoding="utf-8") as f:
            json.dump(result.to_dict(), f, indent=2, sort_keys=True)
        replace_folder(tmp, out)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def _stream_quantize(store, conversion, plan: TorchaoPlan, dtype, device: str, progress: bool = False):
    """The Diffusers model of ``store``, each tensor read once and quantized as it arrives.

    Every decision and step is diffusers' own (``TorchAoHfQuantizer``: which parameters it
    quantizes, ``create_quantized_param``; ``_keep_in_fp32_modules`` casting), as in
    ``from_pretrained(..., quantization_config=TorchAoConfig(...))``, but fed from vqtool's
    streaming conversion: memory is the quantized model plus one tensor, and any format vqtool
    reads works without a full-precision Diffusers copy on disk. Returns the model and, per 2-D
    weight, the type written.
    """
    import diffusers
    import torch
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from diffusers import TorchAoConfig
    from diffusers.quantizers import DiffusersAutoQuantizer
    from torchao.utils import TorchAOBaseTensor
    from tqdm import tqdm

    from vqtool.errors import MappingError
    from vqtool.io import dtype_name
    from vqtool.mapping import iter_converted

    pol, config = plan.policy, plan.config
    cls = getattr(diffusers, config["_class_name"])
    qconfig = TorchAoConfig(pol.make_config(), modules_to_not_convert=sorted(plan.kept))
    with init_empty_weights(include_buffers=False):
        # As from_pretrained does: the quantization config is part of the model's config (saved in config.json).
        model = cls.from_config({**{k: v for k, v in config.items() if not k.startswith("_")},
                                 "quantization_config": qconfig})
    quantizer = DiffusersAutoQuantizer.from_config(qconfig, pre_quantized=False)
    quantizer.validate_environment(torch_dtype=dtype, device_map=None)
    keep_fp32 = list(cls._keep_in_fp32_modules or [])
    quantizer.preprocess_model(model=model, device_map=None, keep_in_fp32_modules=keep_fp32)
    expected = model.state_dict()
    loaded: set[str] = set()
    written: dict[str, str] = {}
    bar = tqdm(total=conversion.total_bytes, unit="B", unit_scale=True, desc="torchao", disable=not progress,
               leave=False)
    for name, tensor in iter_converted(store, conversion):
        if name not in expected:
            raise MappingError(f"{cls.__name__} has no parameter {name}", path=store.path)
        if tensor.is_floating_point():
            fp32 = any(k in name.split(".") for k in keep_fp32)
            tensor = tensor.to(torch.float32 if fp32 else dtype)
        tensor = tensor.contiguous()
        if quantizer.check_if_quantized_param(model, tensor, name, {}, param_device=str(device)):
            quantizer.create_quantized_param(model, tensor, name, torch.device(device), {}, [], dtype=dtype)
        else:
            set_module_tensor_to_device(model, name, device, value=tensor,
                                        dtype=tensor.dtype if tensor.is_floating_point() else None)
        loaded.add(name)
        bar.update(tensor.numel() * tensor.element_size())
        del tensor
    bar.close()
    missing = sorted(set(expected) - loaded)
    if missing:
        raise MappingError(f"the source gave no values for {missing[:5]} ({len(missing)} missing)", path=store.path)
    quantizer.postprocess_model(model)
    model.hf_quantizer = quantizer
    for name, param in model.named_parameters():
        if name.endswith(".weight") and param.dim() == 2:
            written[name] = type_label(pol.config) if isinstance(param, TorchAOBaseTensor) else dtype_name(param.dtype)
    if type_label(pol.config) not in written.values():
        raise PolicyError(f"torchao policy {pol.name} quantized no Linear layer of this {cls.__name__}")
    return model.eval(), written


def is_torchao_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a Diffusers model folder whose config says it was quantized with torchao."""
    cfg = os.path.join(os.fspath(path), "config.json")
    if not os.path.isfile(cfg):
        return False
    with open(cfg, encoding="utf-8") as f:
        quant = (json.load(f).get("quantization_config") or {})
    return quant.get("quant_method") == "torchao"


def read_provenance(path: str | os.PathLike) -> dict[str, Any] | None:
    """The ``vqtool.json`` an export wrote into ``path``, or None for other torchao folders."""
    prov = os.path.join(os.fspath(path), PROVENANCE)
    if not os.path.isfile(prov):
        return None
    with open(prov, encoding="utf-8") as f:
        return json.load(f)


def load_torchao_transformer(path: str | os.PathLike, *, dtype=None, device: str = "cpu"):
    """The Diffusers transformer in the torchao folder ``path`` (weights stay torchao-quantized).

    ``dtype`` (a torch dtype) defaults to the dtype of the export; it is what unquantized
    weights use. Example: ``rp.set_transformer(load_torchao_transformer("wan-int8/"))``.
    """
    import diffusers
    import torch

    path = os.fspath(path)
    if not is_torchao_folder(path):
        raise InputError("not a torchao-quantized Diffusers folder (config.json has no torchao quantization_config)",
                         path=path)
    with open(os.path.join(path, "config.json"), encoding="utf-8") as f:
        class_name = json.load(f)["_class_name"]
    if dtype is None:
        prov = read_provenance(path) or {}
        dtype = getattr(torch, prov.get("dtype", "bfloat16"))
    model = getattr(diffusers, class_name).from_pretrained(path, torch_dtype=dtype)
    return model.to(device).eval()


def torchao_outputs(src: str, policies: list[str], out: str | None) -> list[tuple[str, str]]:
    """``(policy, folder)`` per policy: ``-o FOLDER`` (one policy), ``-o DIR`` (several) or a ``{policy}`` template."""
    from vqtool.publish.family import source_stem

    stem = source_stem(src)
    if out and "{policy}" in out:
        return [(p, out.replace("{policy}", p)) for p in policies]
    if out and len(policies) == 1:
        return [(policies[0], out)]
    return [(p, os.path.join(out or ".", f"{stem}-{p}")) for p in policies]


def quantize_command(src: str, policy: str, out: str | None, *, component: str | None, dtype: str, device: str,
                     overwrite: bool, dry_run: bool, as_json: bool, hash_sources: bool,
                     unsupported: dict[str, Any]) -> str:
    """``vqtool quantize --format torchao``: export (or plan, with ``dry_run``) and return what to print."""
    from vqtool.inspect import human_bytes
    from vqtool.io import open_store

    given = [flag for flag, value in unsupported.items() if value]
    if given:
        raise InputError(f"{', '.join(given)} apply to GGUF policies only, not --format torchao")
    policies = [p.strip() for p in policy.split(",") if p.strip()]
    targets = torchao_outputs(src, policies, out)
    if dry_run:
        with open_store(src, component) as store:
            plans = [plan_torchao(store, p)[0] for p, _ in targets]
        if as_json:
            return json.dumps([{"output": path, **plan.to_dict()} for (_, path), plan in zip(targets, plans)], indent=2)
        lines = []
        for (_, path), plan in zip(targets, plans):
            lines += [f"{path}: {plan.policy.name} ({plan.policy.config}) on {plan.family} {plan.variant} "
                      f"{plan.config['_class_name']}, dtype {DTYPES[dtype]}"]
            lines += [f"  {role:<18} quantize {row['quantize']:>3}   keep {row['keep']:>3}"
                      for role, row in plan.by_role().items()]
        return "\n".join(lines)
    results = [export_torchao(src, path, p, component=component, dtype=dtype, device=device, overwrite=overwrite,
                              hash_sources=hash_sources, progress=not as_json) for p, path in targets]
    if as_json:
        return json.dumps([r.to_dict() for r in results], indent=2)
    return "\n".join(f"  {r.policy:<18} {human_bytes(r.file_bytes):>10}  {r.bits_per_weight:6.3f} bpw  "
                     f"{len(r.quantized)} Linear quantized, {r.seconds:.1f} s  {r.path}" for r in results)
