"""Named tensor transforms used by ``[[transform]]`` groups in the mapping tables.

Each is a pure function ``fn(inputs: list[Tensor], **args) -> list[Tensor]``, registered once by
name (a second registration of the same name is an error). Tables name a forward ``fn``
(external -> canonical) and its ``inverse`` (canonical -> external). Family-specific transforms
may live in their family's module and register themselves the same way with :func:`register`.

Functions must work on ``meta`` tensors too: the planner runs them on meta inputs to learn the
output shapes and dtypes without reading any data.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vqtool.errors import MappingError, ShapeError

TransformFn = Callable[..., list[torch.Tensor]]
_REGISTRY: dict[str, TransformFn] = {}


def register(name: str) -> Callable[[TransformFn], TransformFn]:
    """Decorator: register ``fn`` under ``name``; registering a name twice raises MappingError."""

    def deco(fn: TransformFn) -> TransformFn:
        if name in _REGISTRY:
            raise MappingError(f"transform {name!r} is already registered ({_REGISTRY[name].__module__})")
        _REGISTRY[name] = fn
        return fn

    return deco


def get(name: str) -> TransformFn:
    """The transform registered as ``name``; ``family.fn`` names load ``vqtool.mapping.<family>`` first."""
    if name not in _REGISTRY and "." in name:
        import importlib

        try:
            importlib.import_module(f"vqtool.mapping.{name.split('.', 1)[0]}")
        except ModuleNotFoundError:
            pass
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MappingError(f"unknown transform {name!r}; registered: {', '.join(sorted(_REGISTRY))}") from None


def names() -> list[str]:
    return sorted(_REGISTRY)


@register("chunk")
def chunk(inputs: list[torch.Tensor], *, parts: int, dim: int = 0) -> list[torch.Tensor]:
    """Split one tensor into ``parts`` equal pieces along ``dim`` (e.g. a fused [q;k;v])."""
    (x,) = inputs
    if x.shape[dim] % parts:
        raise ShapeError(f"cannot split a tensor of shape {tuple(x.shape)} into {parts} equal parts along dim {dim}")
    return [p.contiguous() for p in torch.chunk(x, parts, dim=dim)]


@register("cat")
def cat(inputs: list[torch.Tensor], *, dim: int = 0) -> list[torch.Tensor]:
    """Concatenate the inputs along ``dim`` (the inverse of ``chunk``)."""
    return [torch.cat(list(inputs), dim=dim)]


@register("reorder_chunks")
def reorder_chunks(inputs: list[torch.Tensor], *, parts: int, order: list[int], dim: int = 0) -> list[torch.Tensor]:
    """Split into ``parts`` chunks along ``dim`` and put them back in ``order`` (output chunk j = input chunk order[j])."""
    if sorted(order) != list(range(parts)):
        raise MappingError(f"reorder_chunks: order {order} is not a permutation of range({parts})")
    pieces = chunk(inputs, parts=parts, dim=dim)
    return [torch.cat([pieces[k] for k in order], dim=dim)]


@register("copy")
def copy(inputs: list[torch.Tensor], *, count: int) -> list[torch.Tensor]:
    """One tensor written under ``count`` names (tied weights, e.g. T5 ``shared`` and ``embed_tokens``)."""
    (x,) = inputs
    return [x] * count


@register("first_of_equal")
def first_of_equal(inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Several tied copies back to one; they must be identical (the inverse of ``copy``)."""
    first = inputs[0]
    if first.device.type != "meta":
        for other in inputs[1:]:
            if other.shape != first.shape or other.dtype != first.dtype or not torch.equal(other, first):
                raise MappingError("tied tensors differ; refusing to drop one of them")
    return [first]


def apply(name: str, inputs: list[torch.Tensor], args: dict, n_out: int, where: str) -> list[torch.Tensor]:
    """Run transform ``name`` and check it produced ``n_out`` tensors; ``where`` names the group in errors."""
    out = list(get(name)(inputs, **args))
    if len(out) != n_out:
        raise MappingError(f"transform {name!r} for {where} produced {len(out)} tensors, the table expects {n_out}")
    return out
