"""The reference pipeline: a diffusers pipeline folder's text encoder, VAE, tokenizer and scheduler,
with a transformer that can be swapped between runs.

Example::

    from reference_infer import ReferencePipeline, Request, Settings, load_transformer
    rp = ReferencePipeline("Wan2.1-T2V-1.3B-Diffusers/")
    rp.set_transformer(load_transformer("Wan2.1-T2V-1.3B-Diffusers/", dtype=rp.dtype))
    prepared = rp.prepare([Request("p0-s0", "a cat runs", seed=0)], Settings(frames=17, steps=20))
    reference = rp.generate(prepared[0])
    rp.set_transformer(load_transformer("wan-q4_k_m.gguf", dtype=rp.dtype, config=rp.transformer_config))
    candidate = rp.generate(prepared[0])  # same embeddings, same noise: only the weights differ
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from reference_infer.tasks import Prepared, Request, Settings, Task, task_for_pipeline
from vqtool.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

log = logging.getLogger(__name__)

OFFLOAD_MODES = ("none", "model", "sequential")
DTYPES = {"auto": None, "f32": "float32", "float32": "float32", "f16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}


@dataclass(frozen=True)
class MemoryOptions:
    """Memory switches users expect from diffusers: CPU offload (whole models or per layer), VAE tiling/slicing."""

    offload: str = "none"  # none | model | sequential (needs an accelerator device)
    vae_tiling: bool = False
    vae_slicing: bool = False

    def __post_init__(self) -> None:
        if self.offload not in OFFLOAD_MODES:
            raise InputError(f"offload must be one of {', '.join(OFFLOAD_MODES)}, not {self.offload!r}")


@dataclass
class Generation:
    """One generated video: frames in [0, 1] as float32 ``[T, H, W, 3]`` and the latents after each step."""

    frames: "np.ndarray"
    step_latents: list["torch.Tensor"] = field(default_factory=list)
    seconds: float = 0.0
    step_seconds: list[float] = field(default_factory=list)
    decode_seconds: float = 0.0
    peak_memory_bytes: int | None = None  # accelerator peak (CUDA) during this video


def resolve_dtype(name: str | None, device: str) -> "torch.dtype":
    """A torch dtype from ``f32/f16/bf16/auto`` (auto: float32 on CPU, bfloat16 on accelerators)."""
    import torch

    key = (name or "auto").lower()
    if key not in DTYPES:
        raise InputError(f"unknown dtype {name!r}; use one of: {', '.join(DTYPES)}")
    value = DTYPES[key] or ("float32" if str(device) == "cpu" else "bfloat16")
    return getattr(torch, value)


def pipeline_class_name(folder: str) -> str:
    """``_class_name`` of a Diffusers pipeline folder's ``model_index.json``."""
    index = os.path.join(folder, "model_index.json")
    if not os.path.isfile(index):
        raise InputError("not a Diffusers pipeline folder (no model_index.json); pass one with --pipeline "
                         "(it provides the text encoder, VAE, tokenizer and scheduler)", path=folder)
    with open(index, encoding="utf-8") as f:
        return json.load(f).get("_class_name", "")


def resolve_folder(path: str | os.PathLike) -> str:
    """A pipeline folder path, building ``bundled:NAME`` on first use."""
    path = os.fspath(path)
    if path.startswith("bundled:"):
        from vqtool.bundled import materialize

        return materialize(path.split(":", 1)[1])
    return path


def _quiet_loading() -> None:
    """No "Loading pipeline components" / "Loading weights" bars from diffusers and transformers."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()


class ReferencePipeline:
    """A diffusers pipeline loaded from ``folder`` without its transformer; see the module docstring."""

    def __init__(self, folder: str | os.PathLike, *, dtype: str | None = "auto", vae_dtype: str | None = "f32",
                 device: str = "cpu", memory: MemoryOptions = MemoryOptions(), progress: bool = False):
        import diffusers
        import torch

        self.folder = resolve_folder(folder)
        self.device = str(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.vae_dtype = resolve_dtype(vae_dtype, self.device)
        self.memory = memory
        class_name = pipeline_class_name(self.folder)
        self.task: Task = task_for_pipeline(class_name, path=self.folder)
        cls = getattr(diffusers, class_name)
        if not progress:
            _quiet_loading()
        # The folder's own transformer is never loaded: the runs bring theirs.
        self.pipe = cls.from_pretrained(self.folder, transformer=None,
                                        dtype={"vae": self.vae_dtype, "default": self.dtype})
        self.pipe.set_progress_bar_config(disable=not progress, leave=False)
        if memory.vae_tiling:
            self.pipe.vae.enable_tiling()
        if memory.vae_slicing:
            self.pipe.vae.enable_slicing()
        if memory.offload == "none":
            self.pipe.to(self.device)
        self._torch = torch

    @property
    def transformer_config(self) -> dict[str, Any] | None:
        t = self.pipe.transformer
        return None if t is None else {**dict(t.config), "_class_name": type(t).__name__}

    def drop_transformer(self) -> None:
        """Release the current transformer (call before loading the next one: never two in memory)."""
        import gc

        if self.memory.offload != "none":
            self.pipe.remove_all_hooks()
        old = self.pipe.transformer
        self.pipe.register_modules(transformer=None)
        del old
        gc.collect()
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()

    def set_transformer(self, model) -> None:
        """Put ``model`` into the pipeline (dropping the previous one) and re-apply the offload mode."""
        self.drop_transformer()
        self.pipe.register_modules(transformer=model)
        if self.memory.offload == "model":
            self.pipe.enable_model_cpu_offload(device=self.device)
        elif self.memory.offload == "sequential":
            if self.device == "cpu":
                raise InputError("sequential CPU offload needs an accelerator: pass --device cuda")
            self.pipe.enable_sequential_cpu_offload(device=self.device)
        else:
            model.to(self.device)

    def resolve(self, settings: Settings) -> Settings:
        """``settings`` completed with the task's defaults (needs a transformer for the patch size)."""
        self._need_transformer()
        return self.task.resolve(self.pipe, settings)

    def prepare(self, requests: list[Request], settings: Settings) -> list[Prepared]:
        """Text embeddings (once per distinct prompt), initial noise (from each seed) and inputs, on CPU."""
        torch = self._torch
        self._need_transformer()
        settings = self.resolve(settings)
        device = self.pipe._execution_device
        embeds: dict[str, dict[str, torch.Tensor]] = {}
        out = []
        with torch.no_grad():
            for req in requests:
                for need in self.task.needs:
                    if getattr(req, need) is None:
                        raise InputError(f"{self.task.name} needs an input {need} for request {req.id}")
                if req.prompt not in embeds:
                    embeds[req.prompt] = self.task.encode_prompt(self.pipe, req.prompt, settings, device)
                shape = self.task.latent_shape(self.pipe, settings, req)
                latents = torch.randn(shape, generator=torch.Generator().manual_seed(req.seed), dtype=torch.float32)
                extra, inputs = self.task.prepare_inputs(self.pipe, req, settings, device)
                out.append(Prepared(req, settings, {**embeds[req.prompt], "latents": latents, **extra}, inputs))
        return out

    def generate(self, prepared: Prepared) -> Generation:
        """Run the pipeline on ``prepared``; records the latents after every sampling step."""
        torch = self._torch
        self._need_transformer()
        device = self.pipe._execution_device
        step_latents: list[torch.Tensor] = []
        stamps: list[float] = []

        def on_step(pipe, i, t, kwargs):
            step_latents.append(kwargs["latents"].detach().to("cpu", torch.float32).clone())
            stamps.append(time.perf_counter())
            return {}

        cuda = str(device).startswith("cuda")
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        with torch.no_grad():
            result = self.pipe(**self.task.call_kwargs(prepared, device), callback_on_step_end=on_step,
                               callback_on_step_end_tensor_inputs=["latents"])
        ended = time.perf_counter()
        frames = result.frames[0]
        if hasattr(frames, "cpu"):
            frames = frames.float().cpu().numpy()
        edges = [started, *stamps]
        return Generation(
            frames=frames.astype("float32", copy=False),
            step_latents=step_latents,
            seconds=ended - started,
            step_seconds=[b - a for a, b in zip(edges, edges[1:])],
            decode_seconds=ended - (stamps[-1] if stamps else started),
            peak_memory_bytes=int(torch.cuda.max_memory_allocated()) if cuda else None,
        )

    def _need_transformer(self) -> None:
        if self.pipe.transformer is None:
            raise InputError("no transformer set; call set_transformer() first")
