"""What each supported pipeline needs: a task per diffusers pipeline class, in a registry.

A :class:`Task` knows how to turn one request (prompt, seed, conditioning inputs) into the
exact keyword arguments of its diffusers pipeline, with the text embeddings and the initial
noise computed *outside* the pipeline: ``prepare`` runs once per request, and ``call_kwargs``
replays the same tensors for the reference and for every candidate, so every difference
between their videos comes from the transformer weights.

Tasks are recognised from the ``_class_name`` of a pipeline folder's ``model_index.json``
(the signature each task declares); registering a class twice is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vqtool.errors import DetectionError, InputError

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class Settings:
    """Sampling settings shared by every video of a run (``None`` means the task's default)."""

    frames: int | None = None
    height: int | None = None
    width: int | None = None
    steps: int | None = None
    guidance: float | None = None
    negative_prompt: str = ""
    max_sequence_length: int | None = None
    fps: int | None = None


@dataclass
class Request:
    """One video to generate: a prompt, a seed and the conditioning inputs of the task."""

    id: str
    prompt: str
    seed: int
    image: Any = None  # PIL image (I2V)
    video: list | None = None  # list of PIL frames (VACE control video)
    mask: list | None = None  # list of PIL masks, white = generate (VACE)


@dataclass
class Prepared:
    """Everything that must be identical between reference and candidate runs of one request."""

    request: Request
    settings: Settings  # resolved: no None left
    tensors: dict[str, "torch.Tensor"] = field(default_factory=dict)  # prompt_embeds, latents, image_embeds...
    inputs: dict[str, Any] = field(default_factory=dict)  # image, video, mask (PIL)


class Task:
    """One kind of generation (family + mode) over one diffusers pipeline class."""

    name: str = ""
    family: str = ""
    pipeline_classes: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()  # conditioning inputs: "image", "video", "mask"
    defaults = Settings()

    def resolve(self, pipe, settings: Settings) -> Settings:
        """``settings`` with the task's defaults filled in and sizes rounded as the pipeline will."""
        d = self.defaults
        values = {k: (getattr(settings, k) if getattr(settings, k) is not None else getattr(d, k))
                  for k in ("frames", "height", "width", "steps", "guidance", "max_sequence_length", "fps")}
        tf = pipe.vae_scale_factor_temporal
        values["frames"] = max(1, (values["frames"] - 1) // tf * tf + 1)
        multiple = self.spatial_multiple(pipe)
        for key in ("height", "width"):
            if values[key] < multiple:
                raise InputError(f"{key} {values[key]} is smaller than this model's granularity ({multiple} pixels)")
            values[key] = values[key] // multiple * multiple
        return Settings(negative_prompt=settings.negative_prompt, **values)

    def spatial_multiple(self, pipe) -> int:
        return pipe.vae_scale_factor_spatial * self.patch(pipe)

    def patch(self, pipe) -> int:
        return 1

    def encode_prompt(self, pipe, prompt: str, settings: Settings, device) -> dict[str, "torch.Tensor"]:
        cfg = settings.guidance > 1.0
        pos, neg = pipe.encode_prompt(prompt=prompt, negative_prompt=settings.negative_prompt,
                                      do_classifier_free_guidance=cfg, num_videos_per_prompt=1,
                                      max_sequence_length=settings.max_sequence_length, device=device)
        out = {"prompt_embeds": pos.detach().cpu()}
        if cfg:
            out["negative_prompt_embeds"] = neg.detach().cpu()
        return out

    def latent_shape(self, pipe, settings: Settings, request: Request) -> tuple[int, ...]:
        raise NotImplementedError

    def prepare_inputs(self, pipe, request: Request, settings: Settings, device) -> tuple[dict, dict]:
        """``(tensors, inputs)`` beyond the prompt and the noise (image embeddings, PIL inputs)."""
        return {}, {}

    def call_kwargs(self, prepared: Prepared, device) -> dict[str, Any]:
        """Keyword arguments of ``pipe(...)`` for ``prepared`` (tensors moved to ``device``)."""
        import torch

        s = prepared.settings
        kwargs: dict[str, Any] = dict(
            height=s.height, width=s.width, num_frames=s.frames, num_inference_steps=s.steps,
            guidance_scale=s.guidance, max_sequence_length=s.max_sequence_length, output_type="np",
            # Pipelines that draw more noise (an image latent, a stochastic scheduler step) draw the
            # same noise in every run from this generator.
            generator=torch.Generator().manual_seed(prepared.request.seed),
        )
        kwargs.update({k: v.to(device) for k, v in prepared.tensors.items()})
        kwargs.update(prepared.inputs)
        return kwargs


class WanTask(Task):
    family = "wan"
    defaults = Settings(frames=81, height=480, width=832, steps=50, guidance=5.0, max_sequence_length=512, fps=16)

    def patch(self, pipe) -> int:
        return int(pipe.transformer.config.patch_size[1])

    def latent_frames(self, pipe, settings: Settings, request: Request) -> int:
        return (settings.frames - 1) // pipe.vae_scale_factor_temporal + 1

    def latent_shape(self, pipe, settings, request):
        sf = pipe.vae_scale_factor_spatial
        return (1, pipe.vae.config.z_dim, self.latent_frames(pipe, settings, request),
                settings.height // sf, settings.width // sf)


class WanT2V(WanTask):
    name = "wan-t2v"
    pipeline_classes = ("WanPipeline",)


class WanI2V(WanTask):
    name = "wan-i2v"
    pipeline_classes = ("WanImageToVideoPipeline",)
    needs = ("image",)

    def prepare_inputs(self, pipe, request, settings, device):
        # The pipeline refuses `image` together with precomputed `image_embeds`, and needs the image
        # for its VAE condition anyway; the CLIP embedding is deterministic, so both runs get the same.
        return {}, {"image": request.image.convert("RGB").resize((settings.width, settings.height))}


class WanVACE(WanTask):
    name = "wan-vace"
    pipeline_classes = ("WanVACEPipeline",)
    needs = ("video", "mask")

    def prepare_inputs(self, pipe, request, settings, device):
        size = (settings.width, settings.height)
        video = [f.convert("RGB").resize(size) for f in request.video[: settings.frames]]
        mask = [m.convert("L").resize(size) for m in request.mask[: settings.frames]]
        if len(video) < settings.frames or len(mask) < settings.frames:
            raise InputError(f"the VACE control video and mask need {settings.frames} frames; "
                             f"got {len(video)} and {len(mask)}")
        return {}, {"video": video, "mask": mask}


class CogVideoXTask(Task):
    family = "cogvideox"
    defaults = Settings(frames=49, height=480, width=720, steps=50, guidance=6.0, max_sequence_length=226, fps=8)

    def resolve(self, pipe, settings):
        tc = pipe.transformer.config
        if settings.max_sequence_length is None:
            settings = replace(settings, max_sequence_length=int(tc.max_text_seq_length))
        if tc.get("use_learned_positional_embeddings"):
            # A learned position table fixes the latent size: default to the model's own.
            sf = pipe.vae_scale_factor_spatial
            settings = replace(settings, height=settings.height or tc.sample_height * sf,
                               width=settings.width or tc.sample_width * sf)
        return super().resolve(pipe, settings)

    def patch(self, pipe) -> int:
        return int(pipe.transformer.config.patch_size)

    def latent_frames(self, pipe, settings: Settings) -> int:
        n = (settings.frames - 1) // pipe.vae_scale_factor_temporal + 1
        pt = pipe.transformer.config.patch_size_t
        if pt is not None and n % pt:
            n += pt - n % pt  # CogVideoX 1.5 pads the latent frames to a multiple of patch_size_t
        return n

    def latent_shape(self, pipe, settings, request):
        sf = pipe.vae_scale_factor_spatial
        return (1, self.latent_frames(pipe, settings), pipe.vae.config.latent_channels,
                settings.height // sf, settings.width // sf)


class CogVideoXT2V(CogVideoXTask):
    name = "cogvideox-t2v"
    pipeline_classes = ("CogVideoXPipeline",)


class CogVideoXI2V(CogVideoXTask):
    name = "cogvideox-i2v"
    pipeline_classes = ("CogVideoXImageToVideoPipeline",)
    needs = ("image",)

    def latent_shape(self, pipe, settings, request):
        b, f, c, h, w = super().latent_shape(pipe, settings, request)
        pt = pipe.transformer.config.patch_size_t
        if pt is not None:
            f += f % pt  # what the I2V pipeline's prepare_latents adds on top
        return (b, f, c, h, w)

    def prepare_inputs(self, pipe, request, settings, device):
        return {}, {"image": request.image.convert("RGB").resize((settings.width, settings.height))}


TASKS: dict[str, Task] = {}
_BY_CLASS: dict[str, Task] = {}


def register(task: Task) -> Task:
    """Add ``task`` to the registry; a task name or pipeline class registered twice is an error."""
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} registered twice")
    for cls in task.pipeline_classes:
        if cls in _BY_CLASS:
            raise ValueError(f"pipeline class {cls!r} already belongs to task {_BY_CLASS[cls].name!r}")
    TASKS[task.name] = task
    _BY_CLASS.update({cls: task for cls in task.pipeline_classes})
    return task


for _task in (WanT2V(), WanI2V(), WanVACE(), CogVideoXT2V(), CogVideoXI2V()):
    register(_task)


def task_for_pipeline(class_name: str, *, path: str | None = None) -> Task:
    """The task whose pipeline class is ``class_name`` (from ``model_index.json``)."""
    try:
        return _BY_CLASS[class_name]
    except KeyError:
        known = ", ".join(sorted(_BY_CLASS))
        raise DetectionError(f"pipeline class {class_name!r} is not one vqtool can run (it runs: {known})",
                             path=path) from None
