"""Reference inference for validation: diffusers pipelines with a swappable transformer.

Wan2.1 T2V / I2V / VACE and CogVideoX T2V / I2V, from full-precision weights in any format
vqtool reads or from vqtool GGUF files (weights stay quantized, dequantized on the fly), with
the text encoder, VAE, tokenizer and scheduler of a Diffusers pipeline folder. See
:mod:`reference_infer.pipeline` for an example; :mod:`reference_infer.tiny` builds tiny
offline pipelines for tests and the demo.
"""

from __future__ import annotations

_EXPORTS = {
    "ReferencePipeline": "reference_infer.pipeline",
    "MemoryOptions": "reference_infer.pipeline",
    "Generation": "reference_infer.pipeline",
    "Request": "reference_infer.tasks",
    "Settings": "reference_infer.tasks",
    "TASKS": "reference_infer.tasks",
    "load_transformer": "reference_infer.transformer",
    "describe": "reference_infer.transformer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
