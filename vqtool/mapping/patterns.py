"""Name patterns with integer fields (``blocks.{i}.attn1.to_q``) and a tiny safe expression evaluator.

Tables in ``mappings/`` write index arithmetic and config derivations as short
Python-like expressions (``"n // 4"``, ``"shape('patch_embedding.weight')[0]"``).
They are evaluated here over a whitelist of AST nodes: no attribute access, no
imports, only the functions a table is given.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vqtool.errors import MappingError

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
_CMPOPS: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
_BUILTINS: dict[str, Callable[..., Any]] = {
    "range": lambda *a: list(range(*a)), "len": len, "min": min, "max": max, "int": int, "list": list,
}


def evaluate(expr: str, names: Mapping[str, Any], functions: Mapping[str, Callable[..., Any]] | None = None) -> Any:
    """Evaluate a table expression over ``names`` (and whitelisted ``functions``).

    Supports integers, strings, lists, ``+ - * // %``, comparisons, ``and/or/not``,
    ``a if c else b``, subscripts and calls to ``range len min max int list`` plus
    ``functions``. Anything else is a :class:`MappingError` naming the expression.
    """
    funcs = {**_BUILTINS, **(functions or {})}
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise MappingError(f"bad expression {expr!r} in a mapping table: {exc.msg}") from None

    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in names:
                return names[node.id]
            if node.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[node.id]
            raise MappingError(f"expression {expr!r}: unknown name {node.id!r} (known: {sorted(names)})")
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -ev(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not ev(node.operand)
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                result: Any = True
                for value in node.values:
                    result = ev(value)
                    if not result:
                        return result
                return result
            result = False
            for value in node.values:
                result = ev(value)
                if result:
                    return result
            return result
        if isinstance(node, ast.Compare):
            left = ev(node.left)
            for op, comp in zip(node.ops, node.comparators):
                if type(op) not in _CMPOPS:
                    break
                right = ev(comp)
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            else:
                return True
        if isinstance(node, ast.IfExp):
            return ev(node.body) if ev(node.test) else ev(node.orelse)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [ev(e) for e in node.elts]
        if isinstance(node, ast.Subscript):
            return ev(node.value)[ev(node.slice)]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in funcs and not node.keywords:
            return funcs[node.func.id](*[ev(a) for a in node.args])
        raise MappingError(f"expression {expr!r}: {type(node).__name__} is not allowed in mapping tables")

    return ev(tree)


@dataclass(frozen=True)
class Pattern:
    """A tensor-name pattern: literal text with named integer fields, e.g. ``blocks.{i}.ffn.0.weight``."""

    text: str
    fields: tuple[str, ...] = field(init=False)
    _regex: re.Pattern = field(init=False, repr=False, compare=False)
    _prefix: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts, fields, pos = [], [], 0
        for m in _FIELD.finditer(self.text):
            parts.append(re.escape(self.text[pos:m.start()]))
            name = m.group(1)
            parts.append(f"(?P=f_{name})" if name in fields else f"(?P<f_{name}>0|[1-9][0-9]*)")
            if name not in fields:
                fields.append(name)
            pos = m.end()
        parts.append(re.escape(self.text[pos:]))
        object.__setattr__(self, "fields", tuple(fields))
        object.__setattr__(self, "_regex", re.compile("".join(parts) + r"\Z"))
        first = _FIELD.search(self.text)
        object.__setattr__(self, "_prefix", self.text[: first.start()] if first else self.text)

    @property
    def literal_prefix(self) -> str:
        """The text before the first field: a cheap pre-filter for matching."""
        return self._prefix

    def match(self, name: str) -> dict[str, int] | None:
        """The field values if ``name`` matches the whole pattern, else None."""
        m = self._regex.match(name)
        if m is None:
            return None
        return {f: int(m.group(f"f_{f}")) for f in self.fields}

    def format(self, values: Mapping[str, int]) -> str:
        """The name for the given field values."""
        missing = [f for f in self.fields if f not in values]
        if missing:
            raise MappingError(f"pattern {self.text!r} needs values for {missing}")
        return _FIELD.sub(lambda m: str(int(values[m.group(1)])), self.text)

    def __str__(self) -> str:
        return self.text
