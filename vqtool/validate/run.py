"""``vqtool validate`` as a library call: reference videos once, then every candidate against them.

Example::

    from vqtool.validate import validate
    report = validate("bundled:tiny-wan2.1-t2v-pipeline", ["q8_0.gguf", "mixed-q4.gguf"], "val/",
                      settings=Settings(frames=9, height=32, width=32, steps=3))
    report["candidates"][0]["summary"]["psnr_mean"]

The text embeddings, initial noise and conditioning inputs are computed once from the reference
pipeline and replayed for every candidate, so the differences measured come from the weights.
Output folder: ``report.json``, ``report.html``, ``videos/reference/<id>.mp4`` and, per candidate,
``videos/<name>/<id>.mp4`` and ``videos/<name>/<id>.compare.mp4`` (reference | candidate | |diff| x 10).
The folder is assembled under a temporary name next to ``out`` and renamed when complete.
"""

from __future__ import annotations

import datetime
import gc
import logging
import os
import shutil
import time
from dataclasses import asdict
from typing import Any

from reference_infer.pipeline import MemoryOptions
from reference_infer.tasks import Request, Settings
from vqtool.errors import InputError
from vqtool.validate import metrics as M
from vqtool.validate.files import commit_folder, start_folder
from vqtool.validate.report import REPORT_VERSION, summarize, versions, write_json

log = logging.getLogger(__name__)


def _inputs(task, settings: Settings, image: str | None, video: str | None, mask: str | None) -> dict[str, Any]:
    """Conditioning inputs for the task: the user's files, else deterministic synthetic ones."""
    from reference_infer import inputs as I

    out: dict[str, Any] = {}
    w, h, n = settings.width, settings.height, settings.frames
    if "image" in task.needs:
        out["image"] = I.load_image(image) if image else I.synthetic_image(w, h)
    if "video" in task.needs:
        out["video"] = I.fit_frames(I.load_frames(video), n) if video else I.synthetic_control_video(n, w, h)
    if "mask" in task.needs:
        out["mask"] = I.fit_frames(I.load_frames(mask, "L"), n) if mask else I.synthetic_mask(n, w, h)
    unused = [flag for flag, value in (("--image", image), ("--control-video", video), ("--mask", mask))
              if value and flag.strip("-").split("-")[-1] not in task.needs]
    if unused:
        raise InputError(f"{', '.join(unused)} given, but a {task.name} pipeline takes no such input")
    return out


def _video_entry(gen, request, settings, rel_path: str) -> dict[str, Any]:
    return {
        "id": request.id, "prompt": request.prompt, "seed": request.seed, "path": rel_path,
        "frames": int(gen.frames.shape[0]), "height": int(gen.frames.shape[1]), "width": int(gen.frames.shape[2]),
        "flicker": M.json_number(M.flicker(gen.frames)),
        "flicker_per_frame": [M.json_number(v) for v in M.flicker_per_frame(gen.frames)],
        "seconds": round(gen.seconds, 3), "seconds_per_step": [round(s, 4) for s in gen.step_seconds],
        "decode_seconds": round(gen.decode_seconds, 3), "peak_memory_bytes": gen.peak_memory_bytes,
    }


def _compare(ref_frames, ref_latents, gen, ref_flicker: float) -> dict[str, Any]:
    flick = M.flicker(gen.frames)
    return {
        "psnr": M.json_number(M.psnr(ref_frames, gen.frames)),
        "psnr_per_frame": [M.json_number(v) for v in M.psnr_per_frame(ref_frames, gen.frames)],
        "ssim": M.json_number(M.ssim(ref_frames, gen.frames)),
        "ssim_per_frame": [M.json_number(v) for v in M.ssim_per_frame(ref_frames, gen.frames)],
        "max_abs_diff": M.json_number(M.max_abs_diff(ref_frames, gen.frames)),
        "flicker_delta": M.json_number(flick - ref_flicker),
        "flicker_delta_rel": M.json_number((flick - ref_flicker) / ref_flicker if ref_flicker else 0.0),
        "latent_rel_err_per_step": [M.json_number(v) for v in M.latent_errors(ref_latents, gen.step_latents)],
    }


def validate(reference: str, candidates: list[str], out: str, *, pipeline: str | None = None,
             prompts: list[str] | None = None, seeds: list[int] = (0,), settings: Settings = Settings(),
             dtype: str = "auto", vae_dtype: str = "f32", device: str = "cpu", memory: MemoryOptions = MemoryOptions(),
             image: str | None = None, control_video: str | None = None, mask: str | None = None,
             weights: bool = True, html: bool = True, overwrite: bool = False, threads: int | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Generate reference videos from ``reference`` and compare each of ``candidates`` with them.

    ``reference``: full-precision transformer weights in any format vqtool reads (or a pipeline
    folder holding them). ``pipeline``: the Diffusers pipeline folder that gives the text encoder,
    VAE, tokenizer and scheduler (default: ``reference`` itself). ``threads``: torch CPU threads
    for the run (1 is fastest for tiny models: intra-op threads then only wait on each other).
    Returns the report (also written to ``out/report.json``).
    """
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _validate(reference, candidates, out, pipeline=pipeline, prompts=prompts, seeds=seeds,
                         settings=settings, dtype=dtype, vae_dtype=vae_dtype, device=device, memory=memory,
                         image=image, control_video=control_video, mask=mask, weights=weights, html=html,
                         overwrite=overwrite, progress=progress)
    finally:
        torch.set_num_threads(previous)


def _validate(reference, candidates, out, *, pipeline, prompts, seeds, settings, dtype, vae_dtype, device, memory,
              image, control_video, mask, weights, html, overwrite, progress) -> dict[str, Any]:
    import numpy as np
    from tqdm import tqdm

    from reference_infer.inputs import BUILTIN_PROMPTS
    from reference_infer.pipeline import ReferencePipeline
    from reference_infer.transformer import describe, load_transformer
    from vqtool.validate.video import DIFF_GAIN, side_by_side, write_mp4
    from vqtool.validate.weights import candidate_label, weight_errors

    if not candidates:
        raise InputError("give at least one --candidate to compare with the reference")
    reference = os.fspath(reference)
    for c in candidates:
        if not os.path.exists(c):
            raise InputError("no such candidate file", path=c)
    prompts = list(prompts or BUILTIN_PROMPTS)
    seeds = list(seeds)
    if pipeline is None:
        pipeline = reference
    ref_info = describe(reference)
    cand_infos = [describe(c) for c in candidates]
    for c, info in zip(candidates, cand_infos):
        if info.family and ref_info.family and (info.family, info.variant) != (ref_info.family, ref_info.variant):
            raise InputError(f"is a {info.family} {info.variant} transformer, the reference a "
                             f"{ref_info.family} {ref_info.variant}: compare the same model", path=c)
    taken: set[str] = set()
    labels = [candidate_label(c, info.policy, taken) for c, info in zip(candidates, cand_infos)]

    tmp = start_folder(out, overwrite)
    try:
        rp = ReferencePipeline(pipeline, dtype=dtype, vae_dtype=vae_dtype, device=device, memory=memory,
                               progress=False)
        if ref_info.family and rp.task.family != ref_info.family:
            raise InputError(f"the pipeline runs {rp.task.family} models but the reference is a {ref_info.family} "
                             "transformer; pass the matching pipeline with --pipeline", path=reference)
        started = time.perf_counter()
        rp.set_transformer(load_transformer(reference, dtype=rp.dtype, device=device if memory.offload == "none" else "cpu"))
        ref_load = time.perf_counter() - started
        ref_config = rp.transformer_config
        resolved = rp.resolve(settings)
        given = _inputs(rp.task, resolved, image, control_video, mask)
        requests = [Request(f"p{i}-s{seed}", p, seed, **given) for i, p in enumerate(prompts) for seed in seeds]
        prepared = rp.prepare(requests, settings)
        fps = resolved.fps
        bar = tqdm(total=len(prepared) * (1 + len(candidates)), desc="generate", unit="video", disable=not progress,
                   leave=False)

        work = os.path.join(tmp, ".work")
        os.makedirs(work)
        codec = None
        ref_videos = []
        for p in prepared:
            gen = rp.generate(p)
            # Spilled to disk: at 480p, 81 frames and 50 steps a video's frames and latents are ~0.8 GB.
            np.save(os.path.join(work, f"{p.request.id}.npy"), gen.frames)
            np.save(os.path.join(work, f"{p.request.id}.latents.npy"), np.stack([t.numpy() for t in gen.step_latents]))
            rel = f"videos/reference/{p.request.id}.mp4"
            codec = write_mp4(gen.frames, os.path.join(tmp, rel), fps)
            ref_videos.append(_video_entry(gen, p.request, resolved, rel))
            bar.update(1)
            del gen

        cand_entries = []
        for path, label, info in zip(candidates, labels, cand_infos):
            rp.drop_transformer()
            started = time.perf_counter()
            rp.set_transformer(load_transformer(path, dtype=rp.dtype, config=ref_config,
                                                device=device if memory.offload == "none" else "cpu"))
            load_seconds = time.perf_counter() - started
            videos = []
            for p, ref_entry in zip(prepared, ref_videos):
                gen = rp.generate(p)
                ref_frames = np.load(os.path.join(work, f"{p.request.id}.npy"), mmap_mode="r")
                latents = np.load(os.path.join(work, f"{p.request.id}.latents.npy"), mmap_mode="r")
                rel = f"videos/{label}/{p.request.id}.mp4"
                write_mp4(gen.frames, os.path.join(tmp, rel), fps)
                cmp_rel = f"videos/{label}/{p.request.id}.compare.mp4"
                write_mp4(side_by_side(ref_frames, gen.frames), os.path.join(tmp, cmp_rel), fps)
                entry = _video_entry(gen, p.request, resolved, rel)
                entry.update(compare_path=cmp_rel, **_compare(ref_frames, latents,
                                                              gen, M.from_json_number(ref_entry["flicker"])))
                videos.append(entry)
                bar.update(1)
                del gen, ref_frames, latents
            cand_entries.append({"name": label, "weights": info.to_dict(), "load_seconds": round(load_seconds, 3),
                                 "videos": videos})
        bar.close()
        task_name = rp.task.name
        del rp  # frees the pipeline and the last candidate before the weight comparison
        gc.collect()
        shutil.rmtree(work)

        tables = weight_errors(reference, candidates, progress=progress) if weights else [None] * len(candidates)
        for entry, table in zip(cand_entries, tables):
            if table is not None:
                entry["weight_errors"] = table.to_dict()
            entry["summary"] = summarize(entry["videos"], table.overall() if table is not None else None)
            entry["summary"]["file_bytes"] = entry["weights"]["file_bytes"]
            entry["summary"]["bits_per_weight"] = entry["weights"]["bits_per_weight"]

        report = {
            "report_version": REPORT_VERSION, "tool": "vqtool validate",
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "versions": versions(),
            "settings": {
                **asdict(resolved), "prompts": prompts, "seeds": seeds, "task": task_name,
                "reference": reference, "pipeline": pipeline, "dtype": dtype, "vae_dtype": vae_dtype,
                "device": device, "device_name": _device_name(device), "memory": asdict(memory), "video_codec": codec,
                "diff_gain": DIFF_GAIN,
                "inputs": {"image": image, "control_video": control_video, "mask": mask},
            },
            "reference": {"weights": ref_info.to_dict(), "load_seconds": round(ref_load, 3), "videos": ref_videos},
            "candidates": cand_entries,
        }
        write_json(report, os.path.join(tmp, "report.json"))
        if html:
            from vqtool.validate.html import write_html

            write_html(report, tmp)
        commit_folder(tmp, out)
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return report


def _device_name(device: str) -> str:
    import platform

    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()
