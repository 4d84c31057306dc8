"""Locate the data files shipped with vqtool (``mappings/``)."""

from __future__ import annotations

from importlib import resources
from importlib.abc import Traversable


def mappings_dir() -> Traversable:
    """The ``mappings`` data package, wherever vqtool is installed."""
    return resources.files("mappings")


def read_mapping_text(*parts: str) -> str:
    """Text of one data file under ``mappings/``, e.g. ``read_mapping_text("wan", "transformer.toml")``."""
    node = mappings_dir()
    for part in parts:
        node = node.joinpath(part)
    return node.read_text(encoding="utf-8")
