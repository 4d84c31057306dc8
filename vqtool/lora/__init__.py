"""LoRA: SAT LoRA export, LoRA extraction from fine-tunes, quantization-recovery adapters.

Modules, one job each:

- :mod:`vqtool.lora.factors`: SVD of a weight difference, rank rules (fixed, energy, ratio), clamping.
- :mod:`vqtool.lora.formats`: naming and writing Diffusers/PEFT, ComfyUI (kohya keys) and GGUF adapters.
- :mod:`vqtool.lora.extract`: ``vqtool lora extract`` (tuned - base, streamed pair by pair).
- :mod:`vqtool.lora.export_sat`: ``vqtool lora export-sat`` (CogVideoX SAT ``matrix_A/B`` -> PEFT).
- :mod:`vqtool.lora.recovery`: the adapter ``vqtool quantize --recovery-rank`` writes.

Every LoRA vqtool writes has scale 1 (``W' = W + up @ down``); alpha is folded into the factors
and, where a format has an alpha, written so that alpha / rank = 1.
"""
