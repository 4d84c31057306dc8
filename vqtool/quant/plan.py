"""Resolve a policy over a model's canonical graph into a per-tensor plan (no data read).

The plan is data: every tensor's role, block, requested type, final type, the rule
that chose it and any fallback, with sizes. ``--dry-run`` prints it; the GGUF writer
follows it and stores it in the file's ``vqtool.*`` metadata.
"""

from __future__ import annotations

import math

import fnmatch
import tomllib
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from vqtool.graph import ModelGraph
from vqtool.quant.policy import Policy
from vqtool.quant.types import FLOAT_TYPES, keep_type, nbytes, resolve_fallback


def consumer_keep_roles() -> tuple[str, ...]:
    """Roles no policy block-quantizes (``mappings/policies/00-consumers.toml``)."""
    from vqtool.resources import read_mapping_text

    data = tomllib.loads(read_mapping_text("policies", "00-consumers.toml"))
    return tuple(data["consumers"]["keep_roles"])


@dataclass(frozen=True)
class TensorDecision:
    """What happens to one canonical tensor."""

    name: str
    shape: tuple[int, ...]
    source_dtype: str
    role: str
    block: int | None
    block_kind: str | None
    requested: str  # the type the policy asked for (may be KEEP)
    type: str  # the type written
    rule: str  # which rule decided ("default", "keep: ...", or the rule's description)
    fallback: tuple[str, ...] = ()  # types tried before ``type`` because rows did not divide

    @property
    def nbytes(self) -> int:
        return nbytes(self.type, self.shape)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def quantized(self) -> bool:
        return self.type not in FLOAT_TYPES


@dataclass
class QuantPlan:
    """The resolved plan of one policy over one model."""

    policy: Policy
    family: str
    variant: str
    component: str
    config: dict[str, Any]
    decisions: list[TensorDecision] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(d.nbytes for d in self.decisions)

    @property
    def total_params(self) -> int:
        return sum(d.numel for d in self.decisions)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.total_bytes / max(self.total_params, 1)

    @property
    def fallbacks(self) -> list[TensorDecision]:
        return [d for d in self.decisions if d.fallback]

    def by(self, key: str) -> dict[str, dict[str, Any]]:
        """Summary grouped by ``"role"``, ``"block"`` or ``"type"``: tensors, params, bytes, bpw, types."""
        out: dict[str, dict[str, Any]] = defaultdict(lambda: {"tensors": 0, "params": 0, "bytes": 0, "types": {}})
        for d in self.decisions:
            if key == "block":
                k = f"{d.block_kind}.{d.block}" if d.block is not None else "(outside blocks)"
            else:
                k = str(getattr(d, key))
            row = out[k]
            row["tensors"] += 1
            row["params"] += d.numel
            row["bytes"] += d.nbytes
            row["types"][d.type] = row["types"].get(d.type, 0) + 1
        for row in out.values():
            row["bpw"] = round(8 * row["bytes"] / row["params"], 4) if row["params"] else None
        return dict(out)

    def to_dict(self, tensors: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "policy": self.policy.to_dict(),
            "family": self.family, "variant": self.variant, "component": self.component, "config": self.config,
            "tensor_count": len(self.decisions), "params": self.total_params,
            "tensor_bytes": self.total_bytes, "bits_per_weight": round(self.bits_per_weight, 4),
            "by_role": self.by("role"), "by_block": self.by("block"), "by_type": self.by("type"),
            "fallbacks": [
                {"name": d.name, "shape": list(d.shape), "requested": d.requested, "tried": list(d.fallback), "type": d.type}
                for d in self.fallbacks
            ],
        }
        if tensors:
            out["tensors"] = [
                {**{k: v for k, v in asdict(d).items() if k != "fallback"}, "shape": list(d.shape),
                 "fallback": list(d.fallback), "bytes": d.nbytes}
                for d in self.decisions
            ]
        return out


def _quantizable(name: str, shape: tuple[int, ...], role: str, keep_roles: tuple[str, ...]) -> str | None:
    """None if the tensor may be block-quantized, else the reason it may not."""
    if any(fnmatch.fnmatchcase(role, r) for r in keep_roles):
        return f"keep: role {role}"
    if len(shape) != 2:
        return f"keep: {len(shape)}-D tensor"
    if not name.endswith("weight"):
        return "keep: not a weight"
    return None


def resolve(policy: Policy, graph: ModelGraph) -> QuantPlan:
    """Apply ``policy`` to every tensor of ``graph`` (first matching rule wins, then the default)."""
    keep_roles = consumer_keep_roles()
    n_blocks = {kind: len(graph.blocks(kind)) for kind in ("main", "vace")}
    counts: dict[int, int] = defaultdict(int)
    plan = QuantPlan(policy, graph.family, graph.variant, graph.component, dict(graph.config))
    # Rules with max_count count matches in llama.cpp's order: tensors outside blocks
    # first, then by block index (main before VACE), then by name.
    kind_order = {None: 0, "main": 0, "vace": 1}
    order = sorted(
        range(len(graph.tensors)),
        key=lambda i: (
            -1 if graph.tensors[i].block is None else graph.tensors[i].block,
            kind_order.get(graph.tensors[i].block_kind, 2), graph.tensors[i].name,
        ),
    )
    decided: dict[int, TensorDecision] = {}
    for index in order:
        t = graph.tensors[index]
        role = t.role.value if hasattr(t.role, "value") else str(t.role)
        requested, why = policy.default, "default"
        reason = _quantizable(t.name, t.shape, role, keep_roles)
        for i, rule in enumerate(policy.rules):
            if not rule.matches(t.name, role, t.block, t.block_kind, n_blocks.get(t.block_kind or "main", 0)):
                continue
            if rule.max_count is not None:
                if reason is not None:  # counters count quantizable weights only, as llama.cpp's do
                    continue
                if counts[i] >= rule.max_count:
                    continue
                counts[i] += 1
            requested, why = rule.type, rule.note or rule.describe()
            break
        final, tried = requested, ()
        if requested == "KEEP":
            final, why = keep_type(t.dtype, t.shape, role), "keep (policy)"
        elif requested in FLOAT_TYPES:
            if requested != "F32" and keep_type(t.dtype, t.shape, role) == "F32":
                final, why = "F32", "keep: consumers need F32 here"
        else:
            if reason is not None:
                final, why = keep_type(t.dtype, t.shape, role), reason
            else:
                final, chain = resolve_fallback(requested, t.shape)
                tried = tuple(chain)
        decided[index] = TensorDecision(
            t.name, tuple(t.shape), t.dtype, role, t.block, t.block_kind, requested, final, why, tried
        )
    plan.decisions = [decided[i] for i in range(len(graph.tensors))]
    return plan
