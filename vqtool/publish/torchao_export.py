"""``vqtool quantize --format torchao``: a Diffusers model folder quantized with torchao.

The source (any transformer vqtool reads) becomes a full-precision Diffusers folder (used as is
when it already is one), which diffusers loads with ``TorchAoConfig`` and saves with
``save_pretrained`` (safetensors; torchao >= 0.16 flattens its tensor subclasses). The result
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


def _diffusers_folder(store) -> str | None:
    """The folder of ``store`` when diffusers' ``from_pretrained`` can read it as it is."""
    if not store.format.startswith("diffusers-model") or not store.config or not store.files:
        return None
    folder = os.path.dirname(store.files[0])
    if all(os.path.basename(f).startswith("diffusion_pytorch_model") and os.path.dirname(f) == folder
           for f in store.files):
        return folder
    return None


def _source_info(store) -> dict[str, Any]:
    from vqtool.quant.run import sha256_files

    hashes: dict[str, str] = {}
    sha256_files(list(store.files), hashes)
    return {"format": store.format, "files": [os.path.basename(f) for f in store.files],
            "sha256": [hashes[f] for f in store.files]}


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
                   overwrite: bool = False, hash_sources: bool = True) -> TorchaoExport:
    """Quantize the transformer in ``src`` with torchao ``policy`` into the Diffusers folder ``out``.

    ``dtype`` (bf16, f16, f32) is what unquantized weights and activations use; ``device``
    where torchao quantizes (some policies need ``cuda``). Returns what was written.
    """
    import torch

    from vqtool.io import open_store
    from vqtool.mapping.writer import write_plan

    started = time.perf_counter()
    pol = get_torchao_policy(policy)
    if str(device).split(":")[0] not in pol.devices:
        raise PolicyError(f"torchao policy {pol.name} runs on {', '.join(pol.devices)}, not {device}: "
                          f"{pol.description}")
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use bf16, f16 or f32")
    out = os.fspath(out)
    check_output(out, overwrite)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    with open_store(src, component) as store:
        plan, conversion = plan_torchao(store, policy)
        result = TorchaoExport(out, pol.name, pol.config, plan.family, plan.variant, DTYPES[dtype], plan.params,
                               kept=plan.kept)
        result.source = _source_info(store) if hash_sources else {"format": store.format,
                                                                   "files": [os.path.basename(f) for f in store.files]}
        stage_tmp = None
        stage = _diffusers_folder(store)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}-", dir=parent)
        try:
            if stage is None:
                stage_tmp = tempfile.mkdtemp(prefix=".vqtool-stage-", dir=parent)
                log.info("writing a full-precision Diffusers folder for diffusers to load: %s", stage_tmp)
                write_plan(store, conversion, stage_tmp, config_json=plan.config, overwrite=True, progress=False)
                stage = stage_tmp
            written = _quantize_and_save(stage, tmp, plan.config["_class_name"], pol, plan.kept,
                                         getattr(torch, DTYPES[dtype]), device)
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
            for folder in (tmp, stage_tmp):
                if folder and os.path.isdir(folder):
                    shutil.rmtree(folder, ignore_errors=True)
    return result


def _quantize_and_save(stage: str, tmp: str, class_name: str, pol: TorchaoPolicy, kept: dict[str, str],
                       dtype, device: str) -> dict[str, str]:
    """Load ``stage`` through diffusers' TorchAoConfig, save it into ``tmp``; 2-D weight name -> type written."""
    import diffusers
    from diffusers import TorchAoConfig
    from torchao.utils import TorchAOBaseTensor

    from vqtool.io import dtype_name

    cls = getattr(diffusers, class_name)
    qconfig = TorchAoConfig(pol.make_config(), modules_to_not_convert=sorted(kept))
    kwargs: dict[str, Any] = {"quantization_config": qconfig, "torch_dtype": dtype}
    if str(device) != "cpu":
        kwargs["device_map"] = {"": str(device)}
    model = cls.from_pretrained(stage, **kwargs)
    written = {}
    for name, param in model.named_parameters():
        if name.endswith(".weight") and param.dim() == 2:
            quantized = isinstance(param, TorchAOBaseTensor) or isinstance(getattr(param, "data", None), TorchAOBaseTensor)
            written[name] = type_label(pol.config) if quantized else dtype_name(param.dtype)
    if type_label(pol.config) not in written.values():
        raise PolicyError(f"torchao policy {pol.name} quantized no Linear layer of this {class_name}")
    model.save_pretrained(tmp, safe_serialization=True)
    return written


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
                              hash_sources=hash_sources) for p, path in targets]
    if as_json:
        return json.dumps([r.to_dict() for r in results], indent=2)
    return "\n".join(f"  {r.policy:<18} {human_bytes(r.file_bytes):>10}  {r.bits_per_weight:6.3f} bpw  "
                     f"{len(r.quantized)} Linear quantized, {r.seconds:.1f} s  {r.path}" for r in results)
