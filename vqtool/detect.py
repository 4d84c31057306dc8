"""Detect what a tensor store holds: family, variant, component, naming format, config and roles.

Detection walks the declared signatures of the mapping tables (``[detect]`` in each
``mappings/<family>/<component>.<format>.toml``: keys that must exist, keys that rule a table
out), then derives the variant and config from shapes through the canonical table. Headers only;
no tensor data is read.

Example::

    from vqtool.io import open_store
    from vqtool.detect import detect
    d = detect(open_store("wan2.1_t2v_1.3B_bf16.safetensors"))
    d.family, d.variant, d.component, d.format   # ('wan', 't2v-1.3B', 'transformer', 'original')
    d.config["num_layers"], d.roles["blocks.0.self_attn.q.weight"]   # (30, 'attn.self.q')
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from vqtool.errors import DetectionError

log = logging.getLogger(__name__)


@dataclass
class Detection:
    """The result of :func:`detect`. ``roles`` is keyed by the store's own tensor names."""

    family: str
    variant: str
    component: str
    format: str
    config: dict[str, Any] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    prefix: str = ""

    @property
    def known(self) -> bool:
        return self.family != "unknown"

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "variant": self.variant, "component": self.component, "format": self.format,
                "prefix": self.prefix, "config": self.config, "problems": self.problems}


UNKNOWN = Detection("unknown", "unknown", "unknown", "unknown")


def detect(store, *, family: str | None = None, component: str | None = None, fmt: str | None = None) -> Detection:
    """Identify ``store`` from declared signatures; family "unknown" when no table matches.

    Unknown or missing tensors do not fail detection: they are listed in ``problems`` (conversion
    refuses them). Several matching tables is a :class:`DetectionError` (narrow with the arguments).
    """
    from vqtool.mapping import identify

    ident = identify(store, family=family, component=component, fmt=fmt)
    if ident is None:
        return Detection(**{**UNKNOWN.__dict__, "config": {}, "roles": {}, "problems": []})
    graph = ident.graph
    role_of = {t.name: t.role.value for t in graph.tensors}
    roles: dict[str, str] = {}
    for group in ident.side.groups:
        for i, name in enumerate(group.external):
            # A fused external tensor takes the role of the canonical tensor at its position, else the first.
            canonical = group.canonical[i] if len(group.canonical) == len(group.external) else group.canonical[0]
            if canonical in role_of:
                roles[name] = role_of[canonical]
    return Detection(graph.family, graph.variant, graph.component, ident.table.format, dict(graph.config), roles,
                     ident.problems(), ident.side.prefix)


def detect_or_raise(store, **kwargs) -> Detection:
    """Like :func:`detect` but a :class:`DetectionError` when nothing matches."""
    found = detect(store, **kwargs)
    if not found.known:
        raise DetectionError(
            "could not tell which model this is: no mapping table's signature matches its tensor names "
            "(supported: Wan2.1, CogVideoX, UMT5/T5 encoders; run `vqtool inspect` to see the names)",
            path=getattr(store, "path", None),
        )
    return found
