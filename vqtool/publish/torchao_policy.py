"""torchao policies: ``[[torchao]]`` tables in ``mappings/policies/*.toml`` loaded into typed config.

A policy names a ``torchao.quantization`` config class and its arguments, the devices torchao can
quantize and run it on, and (optionally) the roles it keeps unquantized (default: the roles every
GGUF policy keeps, so GGUF and torchao variants keep the same layers). ``[[torchao]]`` is not
``[[policy]]``: the GGUF registry never sees these tables, and a name defined twice is an error.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from typing import Any

from vqtool.errors import PolicyError

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
                              f"(installed torchao {torchao_version()}); see {self.source}")
        return cls(**self.args)

    def roles_kept(self) -> tuple[str, ...]:
        if self.keep_roles is not None:
            return self.keep_roles
        from vqtool.quant.plan import consumer_keep_roles

        return consumer_keep_roles()


def torchao_version() -> str:
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


def type_label(config: str) -> str:
    """A short label for a torchao config class in tables: ``Int8WeightOnlyConfig`` -> ``torchao Int8WeightOnly``."""
    return "torchao " + config.removesuffix("Config")
