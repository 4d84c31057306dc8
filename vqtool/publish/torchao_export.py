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
import tomllib
from dataclasses import asdict, dataclass, field
from typing import Any

from vqtool.errors import InputError, OutputExistsError, PolicyError

log = logging.getLogger(__name__)

PROVENANCE = "vqtool.json"
DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "f16": "float16", "float16": "float16",
          "f32": "float32", "float32": "float32"}


@dataclass(frozen=True)
class TorchaoPolicy:
    """One ``[[torchao]]`` table: a torchao config class, its arguments, where it runs, what it keeps."""

    name: str
    config: str
    description: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    devices: tuple[str, ...] = ("cpu", "cuda")
    keep_roles: tuple[str, ...] | None = None  # None: the roles every GGUF policy keeps
    source: str = ""

    def make_config(self):
        """The torchao config object (``torchao.quantization.<config>(**args)``)."""
        import torchao.quantization as tq

        cls = getattr(tq, self.config, None)
        if cls is None:
            raise PolicyError(f"torchao policy {self.name}: torchao has no {self.config} "
                              f"(installed torchao {_torchao_version()}); see {self.source}")
        return cls(**self.args)

    def roles_kept(self) -> tuple[str, ...]:
        if self.keep_roles is not None:
            return self.keep_roles
        from vqtool.quant.plan import consumer_keep_roles

        return consumer_keep_roles()


def _torchao_version() -> str:
    from importlib.metadata import version

    return version("torchao")


def _policy_from_table(table: dict[str, Any], source: str) -> TorchaoPolicy:
    allowed = {"name", "config", "description", "args", "devices", "keep_roles"}
    unknown = set(table) - allowed
    if unknown:
        raise PolicyError(f"{source}: torchao policy: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    if "name" not in table or "config" not in table:
        raise PolicyError(f"{source}: a torchao policy needs 'name' and 'config'")
    keep = table.get("keep_roles")
    return TorchaoPolicy(
        name=table["name"], config=table["config"], description=table.get("description", ""),
        args=dict(table.get("args", {})), devices=tuple(table.get("devices", ("cpu", "cuda"))),
        keep_roles=tuple(keep) if keep is not None else None, source=source,
    )


_POLICIES: dict[str, TorchaoPolicy] | None = None


def torchao_policies() -> dict[str, TorchaoPolicy]:
    """Every ``[[torchao]]`` table under ``mappings/policies/`` by name; a name defined twice is an error."""
    global _POLICIES
    if _POLICIES is None:
        from vqtool.resources import mappings_dir

        found: dict[str, TorchaoPolicy] = {}
        for entry in sorted(mappings_dir().joinpath("policies").iterdir(), key=lambda e: e.name):
            if not entry.name.endswith(".toml"):
                continue
            for table in tomllib.loads(entry.read_text(encoding="utf-8")).get("torchao", []):
                policy = _policy_from_table(table, f"mappings/policies/{entry.name}")
                if policy.name in found:
                    raise PolicyError(f"torchao policy {policy.name!r} defined twice "
                                      f"({found[policy.name].source} and {policy.source})")
                found[policy.name] = policy
        _POLICIES = found
    return _POLICIES


def get_torchao_policy(name: str) -> TorchaoPolicy:
    policies = torchao_policies()
    if name not in policies:
        raise PolicyError(f"unknown torchao policy {name!r}; available: {', '.join(policies)}")
    return policies[name]


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
                "bits_per_weight": self.bits_per_weight, "torchao_version": _torchao_version()}


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


def type_label(config: str) -> str:
    """A short label for a torchao config class in tables: ``Int8WeightOnlyConfig`` -> ``torchao Int8WeightOnly``."""
    return "torchao " + config.removesuffix("Config")


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
    from vqtool.mapping import identify, plan_conversion
    from vqtool.mapping.writer import write_plan

    started = time.perf_counter()
    pol = get_torchao_policy(policy)
    device_kind = str(device).split(":")[0]
    if device_kind not in pol.devices:
        raise PolicyError(f"torchao policy {pol.name} runs on {', '.join(pol.devices)}, not {device}: "
                          f"{pol.description}")
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; use bf16, f16 or f32")
    out = os.fspath(out)
    check_output(out, overwrite)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    with open_store(src, component) as store:
        ident = identify(store)
        if ident is None or ident.graph.component != "transformer":
            raise InputError("torchao export works on transformers vqtool recognises; run `vqtool inspect` on it",
                             path=os.fspath(src))
        plan = plan_conversion(store, "diffusers", ident=ident)
        graph = ident.graph
        config = dict(plan.config_json or {})
        if store.config and store.config.get("_class_name") == config.get("_class_name"):
            config.update(store.config)
        roles = weight_roles(plan, graph)
        kept = kept_modules(roles, pol.roles_kept())
        result = TorchaoExport(out, pol.name, pol.config, graph.family, graph.variant, DTYPES[dtype],
                               graph.num_params(), kept=kept)
        result.source = _source_info(store) if hash_sources else {"format": store.format,
                                                                   "files": [os.path.basename(f) for f in store.files]}
        stage_tmp = None
        stage = _diffusers_folder(store)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}-", dir=parent)
        try:
            if stage is None:
                stage_tmp = tempfile.mkdtemp(prefix=".vqtool-stage-", dir=parent)
                log.info("writing a full-precision Diffusers folder for diffusers to load: %s", stage_tmp)
                write_plan(store, plan, stage_tmp, config_json=config, overwrite=True, progress=False)
                stage = stage_tmp
            written = _quantize_and_save(stage, tmp, config["_class_name"], pol, kept,
                                         getattr(torch, DTYPES[dtype]), device)
            result.quantized = sorted(n[: -len(".weight")] for n, t in written.items() if t == type_label(pol.config))
            result.weights = {t.name: {"role": roles[t.name], "shape": list(t.shape), "type": written[t.name]}
                              for t in plan.tensors if t.name in roles and t.name in written}
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
