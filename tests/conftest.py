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


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models and small SVDs: torch's intra-op threads only wait on each other on a busy
    2-core runner (up to 10x slower). Request with ``pytestmark = pytest.mark.usefixtures(...)``;
    the previous setting is restored for the worker's other modules."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
