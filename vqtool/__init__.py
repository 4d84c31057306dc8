"""vqtool: map, quantize, validate and publish video diffusion checkpoints.

The package root stays import-light (no torch, no numpy) so that ``vqtool --help``
is instant; heavy modules are imported by the commands that need them.
"""

__version__ = "0.1.0"

from vqtool.errors import VqtoolError

__all__ = ["VqtoolError", "__version__"]
