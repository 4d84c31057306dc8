"""Quantization policies: typed, validated config loaded from ``mappings/policies/*.toml``.

A policy is an ordered list of :class:`Rule` (first match wins) plus a default
type. A rule matches tensors by role (glob over the role vocabulary, e.g.
``"attn.*.v"``), by canonical name (glob or regex), by block position
(``first:N``, ``last:N``, ``every:K``, ``more_bits``, ``range:A-B``) and block kind,
optionally only the first ``max_count`` tensors it matches (llama.cpp's "first
4 V tensors"). The type is a GGML type name or ``KEEP`` (high precision as the
consumers require; see :func:`vqtool.quant.types.keep_type`).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from vqtool.errors import PolicyError
from vqtool.quant.types import normalize_type

BLOCK_SPEC = re.compile(r"^(first|last|every):(\d+)$|^range:(\d+)-(\d+)$|^more_bits$|^all$")


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp's ``use_more_bits``: first and last eighth, and every third block between."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def block_matches(spec: str, block: int | None, n_blocks: int) -> bool:
    if spec == "all":
        return True
    if block is None:
        return False
    if spec == "more_bits":
        return use_more_bits(block, n_blocks)
    m = BLOCK_SPEC.match(spec)
    assert m is not None  # validated in Rule.__post_init__
    if m.group(1) == "first":
        return block < int(m.group(2))
    if m.group(1) == "last":
        return block >= n_blocks - int(m.group(2))
    if m.group(1) == "every":
        return block % int(m.group(2)) == 0
    return int(m.group(3)) <= block <= int(m.group(4))


@dataclass(frozen=True)
class Rule:
    """One policy rule; every given criterion must hold for a tensor to match."""

    type: str
    roles: tuple[str, ...] = ()
    names: tuple[str, ...] = ()
    regex: str | None = None
    blocks: str = "all"
    block_kind: str | None = None
    max_count: int | None = None
    note: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "type", normalize_type(self.type, "rule: "))
        if not BLOCK_SPEC.match(self.blocks):
            raise PolicyError(f"rule blocks={self.blocks!r}: use first:N, last:N, every:K, range:A-B, more_bits or all")
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise PolicyError(f"rule regex {self.regex!r} is invalid: {exc}") from None
        if self.block_kind not in (None, "main", "vace"):
            raise PolicyError(f"rule block_kind={self.block_kind!r}: use main or vace")
        if not (self.roles or self.names or self.regex or self.blocks != "all" or self.block_kind):
            raise PolicyError("a rule must say what it matches (roles, names, regex, blocks or block_kind)")

    def matches(self, name: str, role: str, block: int | None, block_kind: str | None, n_blocks: int) -> bool:
        if self.roles and not any(fnmatch.fnmatchcase(role, r) for r in self.roles):
            return False
        if self.names and not any(fnmatch.fnmatchcase(name, p) for p in self.names):
            return False
        if self.regex and not re.search(self.regex, name):
            return False
        if self.block_kind and block_kind != self.block_kind:
            return False
        return block_matches(self.blocks, block, n_blocks)

    def describe(self) -> str:
        parts = []
        if self.roles:
            parts.append("roles " + ",".join(self.roles))
        if self.names:
            parts.append("names " + ",".join(self.names))
        if self.regex:
            parts.append(f"regex /{self.regex}/")
        if self.blocks != "all":
            parts.append(f"blocks {self.blocks}")
        if self.block_kind:
            parts.append(f"{self.block_kind} blocks")
        if self.max_count:
            parts.append(f"first {self.max_count} matches")
        return " & ".join(parts) + f" -> {self.type}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        for key in ("roles", "names", "regex", "block_kind", "max_count", "note"):
            value = getattr(self, key)
            if value:
                out[key] = list(value) if isinstance(value, tuple) else value
        if self.blocks != "all":
            out["blocks"] = self.blocks
        return out


@dataclass(frozen=True)
class Policy:
    """A named, ordered rule list plus a default type."""

    name: str
    description: str
    default: str
    rules: tuple[Rule, ...] = ()
    keeps: str = ""  # what stays in high precision and why (shown by `vqtool policies`)
    file_type: str | None = None  # gguf LlamaFileType name written as general.file_type
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "default", normalize_type(self.default, f"policy {self.name}: default: "))

    def with_overrides(self, overrides: list[str]) -> "Policy":
        """This policy with ``PATTERN=TYPE`` overrides placed before its own rules."""
        extra = tuple(parse_override(o) for o in overrides)
        if not extra:
            return self
        return Policy(self.name, self.description, self.default, extra + self.rules, self.keeps, self.file_type, self.source)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "default": self.default,
            "rules": [r.to_dict() for r in self.rules], "keeps": self.keeps, "file_type": self.file_type,
        }


def parse_override(text: str) -> Rule:
    """``'blocks.0.*=Q8_0'`` (name glob) or ``'role:ffn.down=Q6_K'`` -> a rule."""
    if "=" not in text:
        raise PolicyError(f"override {text!r}: write PATTERN=TYPE, e.g. 'blocks.0.*=Q8_0' or 'role:ffn.down=Q6_K'")
    pattern, qtype = text.rsplit("=", 1)
    pattern = pattern.strip()
    if not pattern:
        raise PolicyError(f"override {text!r}: empty pattern")
    if pattern.startswith("role:"):
        return Rule(type=qtype, roles=(pattern[5:],), note=f"--override {text}")
    return Rule(type=qtype, names=(pattern,), note=f"--override {text}")


def policy_from_dict(data: dict[str, Any], source: str) -> Policy:
    """Build and validate a policy from its TOML table."""
    allowed = {"name", "description", "default", "rule", "keeps", "file_type"}
    unknown = set(data) - allowed
    if unknown:
        raise PolicyError(f"{source}: unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")
    if "name" not in data or "default" not in data:
        raise PolicyError(f"{source}: a policy needs 'name' and 'default'")
    rules = []
    for i, row in enumerate(data.get("rule", [])):
        fields = {"type", "roles", "names", "regex", "blocks", "block_kind", "max_count", "note"}
        bad = set(row) - fields
        if bad:
            raise PolicyError(f"{source}: rule {i + 1}: unknown keys {sorted(bad)}; allowed: {sorted(fields)}")
        if "type" not in row:
            raise PolicyError(f"{source}: rule {i + 1} has no type")
        try:
            rules.append(
                Rule(
                    type=row["type"], roles=tuple(row.get("roles", ())), names=tuple(row.get("names", ())),
                    regex=row.get("regex"), blocks=row.get("blocks", "all"), block_kind=row.get("block_kind"),
                    max_count=row.get("max_count"), note=row.get("note", ""),
                )
            )
        except PolicyError as exc:
            raise PolicyError(f"{source}: rule {i + 1}: {exc}") from None
    return Policy(
        name=str(data["name"]), description=str(data.get("description", "")), default=data["default"],
        rules=tuple(rules), keeps=str(data.get("keeps", "")), file_type=data.get("file_type"), source=source,
    )


def load_policy_file(path: str) -> Policy:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: invalid TOML: {exc}") from None
    return policy_from_dict(data, path)


@dataclass
class PolicyRegistry:
    """Named policies; registering a name twice is an error."""

    policies: dict[str, Policy] = field(default_factory=dict)

    def register(self, policy: Policy) -> None:
        if policy.name in self.policies:
            raise PolicyError(f"policy {policy.name!r} defined twice ({self.policies[policy.name].source} and {policy.source})")
        self.policies[policy.name] = policy

    def get(self, name: str) -> Policy:
        if name in self.policies:
            return self.policies[name]
        if name.endswith(".toml"):
            return load_policy_file(name)
        raise PolicyError(f"unknown policy {name!r}; built-in: {', '.join(self.policies)} (or pass a .toml file)")


_BUILTIN: PolicyRegistry | None = None


def builtin_policies() -> PolicyRegistry:
    """Every policy under ``mappings/policies/`` (loaded once), in the order of their files' ``order`` prefix."""
    global _BUILTIN
    if _BUILTIN is None:
        from vqtool.resources import mappings_dir

        registry = PolicyRegistry()
        folder = mappings_dir().joinpath("policies")
        for entry in sorted(folder.iterdir(), key=lambda e: e.name):
            if entry.name.endswith(".toml"):
                data = tomllib.loads(entry.read_text(encoding="utf-8"))
                for table in data.get("policy", []):
                    registry.register(policy_from_dict(table, f"mappings/policies/{entry.name}"))
        _BUILTIN = registry
    return _BUILTIN


def get_policy(name: str) -> Policy:
    """A built-in policy by name, or a policy file by path."""
    return builtin_policies().get(name)
