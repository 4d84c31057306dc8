"""Shared pytest configuration: deterministic seeds, an isolated vqtool cache, quiet imports."""

from __future__ import annotations

import logging
import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # Bundled models are built into a per-session cache, never the user's home.
    os.environ.setdefault("VQTOOL_CACHE", str(tmp_path_factory.mktemp("vqtool-cache")))
    logging.getLogger("torchao").setLevel(logging.ERROR)
