"""CogVideoX SAT folders <-> Diffusers folders: the library behind ``vqtool sat2hf`` and ``vqtool hf2sat``.

Both directions go through the mapping engine (tables in ``mappings/cogvideox`` and
``mappings/t5``), one conversion unit at a time, and refuse unknown or missing keys.

What a SAT -> Diffusers conversion cannot carry over, and what hf2sat does about it
(reference checkpoint-formats.md §1.2-1.3):

- ``mixins.pos_embed.freqs_sin/cos`` (5B, 5B-I2V rotary tables): dropped; Diffusers
  computes rotary embeddings at run time and SAT recomputes the buffers at init, so
  hf2sat omits them (SAT loads with ``strict=False``).
- ``transformer.position_embeddings.weight`` (rotary variants): a leftover parameter of
  SAT's base model that the rotary forward never reads; dropped. hf2sat writes it as
  zeros so the file has the key set SAT itself saves (and detection can see that the
  model is rotary).
- 2B's sincos table is not in SAT files either (``reinit`` regenerates it) nor in
  Diffusers files (a non-persistent buffer).
- Sample size and text length are not in the weights: sat2hf uses the released values
  unless ``config`` overrides them (needed when a learned position table has another size).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any

from vqtool.errors import DetectionError, InputError, MappingError, OutputExistsError
from vqtool.mapping import identify, plan_conversion
from vqtool.mapping.patterns import evaluate
from vqtool.sat import COMPONENT_PREFIXES, DEFAULT_ITERATION, check_not_lora, open_sat, write_transformer, write_vae

log = logging.getLogger(__name__)

I2V_VARIANTS = ("5b-i2v", "1.5-i2v")
# VAE settings that are not in its weights, per transformer variant (reference §1.2, §1.5).
VAE_CONFIG = {
    "2b": {"scaling_factor": 1.15258426, "invert_scale_latents": False},
    "5b": {"scaling_factor": 0.7, "invert_scale_latents": False},
    "5b-i2v": {"scaling_factor": 0.7, "invert_scale_latents": False},
    "1.5": {"scaling_factor": 0.7, "invert_scale_latents": True},
    "1.5-i2v": {"scaling_factor": 0.7, "invert_scale_latents": True},
}
# diffusers scripts/convert_cogvideox_to_diffusers.py: v-prediction, zero-SNR, trailing spacing;
# snr_shift_scale 3.0 for 2B and 1.0 for 5B (reference §1.4).
SCHEDULER_CONFIG = {
    "_class_name": "CogVideoXDDIMScheduler", "num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
    "beta_schedule": "scaled_linear", "clip_sample": False, "set_alpha_to_one": True, "steps_offset": 0,
    "prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
}
TOKENIZER_FILES = ("spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")
T5_FOLDER = "t5-v1_1-xxl"
ROTARY_LEFTOVER = "transformer.position_embeddings.weight"
ROTARY_LEFTOVER_ROWS = 64  # SAT base model's max_sequence_length for the unused table (reference §1.2)


def _identify(store, component: str, fmt: str, overrides: dict[str, Any] | None = None):
    family = "t5" if component == "text_encoder" else "cogvideox"
    ident = identify(store, family=family, component=component, fmt=fmt)
    if ident is None:
        raise DetectionError(f"not a {family} {component} in {fmt} names", path=store.path)
    ident.check(f"{store.path} ({component})")
    if overrides:
        unknown = sorted(set(overrides) - set(ident.graph.config))
        if unknown:
            raise InputError(f"unknown {component} config key(s) {', '.join(unknown)}; known: "
                             f"{', '.join(k for k in ident.graph.config if k != 'kind')}")
        ident.graph.config.update(overrides)
        ident.graph.variant = str(evaluate(ident.canonical.variant, ident.graph.config))
    return ident


def check_learned_positions(ident) -> None:
    """The learned position table's length must equal text + patches of the configured sample."""
    cfg = ident.graph.config
    if not cfg.get("use_learned_positional_embeddings"):
        return
    p, pt = cfg["patch_size"], cfg.get("patch_size_t") or 1
    frames = ((cfg["sample_frames"] - 1) // 4 + 1) // pt
    want = cfg["max_text_seq_length"] + (cfg["sample_height"] // p) * (cfg["sample_width"] // p) * frames
    got = ident.graph["patch_embed.pos_embedding"].shape[1]
    if want != got:
        raise MappingError(
            f"the learned position table has {got} positions but the config gives {want} "
            f"(text {cfg['max_text_seq_length']} + sample {cfg['sample_height']}x{cfg['sample_width']}x"
            f"{cfg['sample_frames']}); pass the sample size it was trained for, e.g. "
            "--config sample_height=60 --config sample_width=90 --config sample_frames=49 --config max_text_seq_length=226")


def _summary(plan) -> dict[str, Any]:
    return {"variant": plan.variant, "from": plan.source_format, "to": plan.target_format,
            "tensors": len(plan.tensors), "total_bytes": plan.total_bytes, "config": plan.config_json or plan.config,
            "ignored": [{"name": n, "reason": r} for n, r in plan.ignored]}


def _check_free(path: str, overwrite: bool) -> None:
    if os.path.exists(path) and not overwrite:
        raise OutputExistsError("exists; pass --overwrite to replace it", path=path)


def _write_text(path: str, text: str, overwrite: bool) -> None:
    _check_free(path, overwrite)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def _copy_files(src_dir: str, dst_dir: str, names: tuple[str, ...], overwrite: bool) -> list[str]:
    found = [n for n in names if os.path.isfile(os.path.join(src_dir, n))]
    if not found:
        raise InputError(f"no tokenizer files ({', '.join(names)}) found", path=src_dir)
    os.makedirs(dst_dir, exist_ok=True)
    for n in found:
        dst = os.path.join(dst_dir, n)
        _check_free(dst, overwrite)
        tmp = f"{dst}.tmp-{os.getpid()}"
        shutil.copyfile(os.path.join(src_dir, n), tmp)
        os.replace(tmp, dst)
    return [os.path.join(dst_dir, n) for n in found]


def _has_tokenizer(folder: str | None) -> bool:
    return bool(folder) and any(os.path.isfile(os.path.join(folder, n)) for n in TOKENIZER_FILES)


def sat_to_diffusers(sat_dir: str | os.PathLike, out: str | os.PathLike, *, t5: str | os.PathLike | None = None,
                     tokenizer: str | os.PathLike | None = None, config: dict[str, Any] | None = None,
                     dry_run: bool = False, overwrite: bool = False, max_shard_size: int | str = "5GB",
                     progress: bool = True) -> dict[str, Any]:
    """Convert a CogVideoX SAT folder into Diffusers component folders (``transformer/``, ``vae/``).

    With a T5 (``t5``, the SAT folder's ``t5*/`` or the T5 keys of a full fine-tune) and a tokenizer
    (``tokenizer`` or the T5 folder's own tokenizer files) it also writes ``text_encoder/``,
    ``tokenizer/``, ``scheduler/`` and ``model_index.json``: a folder ``CogVideoXPipeline`` (or the
    image-to-video pipeline) loads. ``config`` overrides the derived transformer config (sample
    size, text length). Returns a JSON-ready report; ``dry_run`` plans without writing.

    Example::

        sat_to_diffusers("CogVideoX-2b-sat", "CogVideoX-2b", t5="CogVideoX-2b-sat/t5-v1_1-xxl")
    """
    from vqtool.io import open_store

    sat_dir, out = os.fspath(sat_dir), os.fspath(out)
    comps = open_sat(sat_dir)
    check_not_lora(comps["transformer"])
    t_ident = _identify(comps["transformer"], "transformer", "sat", config)
    check_learned_positions(t_ident)
    variant = t_ident.graph.variant
    jobs: list[tuple[str, Any, Any, dict | None]] = [
        ("transformer", comps["transformer"], plan_conversion(comps["transformer"], "diffusers", ident=t_ident), None)]
    if "vae" in comps:
        v_ident = _identify(comps["vae"], "vae", "sat", VAE_CONFIG[variant])
        jobs.append(("vae", comps["vae"], plan_conversion(comps["vae"], "diffusers", ident=v_ident), None))
    t5_store = open_store(os.fspath(t5)) if t5 else comps.get("text_encoder")
    if t5_store is not None:
        e_ident = _identify(t5_store, "text_encoder", "transformers")
        plan = plan_conversion(t5_store, "transformers", ident=e_ident)
        jobs.append(("text_encoder", t5_store, plan, t5_store.config or plan.config_json))
    tok_dir = os.fspath(tokenizer) if tokenizer else None
    if tok_dir is None and t5_store is not None and _has_tokenizer(os.path.dirname(t5_store.files[0])):
        tok_dir = os.path.dirname(t5_store.files[0])
    pipeline = t5_store is not None and tok_dir is not None and "vae" in comps
    pipeline_class = "CogVideoXImageToVideoPipeline" if variant in I2V_VARIANTS else "CogVideoXPipeline"
    report: dict[str, Any] = {
        "source": sat_dir, "output": out, "variant": variant, "dry_run": dry_run,
        "pipeline": pipeline_class if pipeline else None,
        "components": {name: _summary(plan) for name, _, plan, _ in jobs},
    }
    if not pipeline:
        missing = [w for w, ok in (("vae", "vae" in comps), ("T5 (--t5)", t5_store is not None),
                                   ("tokenizer (--tokenizer)", tok_dir is not None)) if not ok]
        report["pipeline_missing"] = missing
    if dry_run:
        return report
    from vqtool.mapping.writer import write_plan

    if not overwrite:  # refuse before writing anything, not after the first component
        targets = [name for name, *_ in jobs] + (["tokenizer"] if tok_dir else []) + (
            ["scheduler", "model_index.json"] if pipeline else [])
        taken = [t for t in targets if os.path.exists(os.path.join(out, t)) and (
            not os.path.isdir(os.path.join(out, t)) or os.listdir(os.path.join(out, t)))]
        if taken:
            raise OutputExistsError(f"{', '.join(taken)} already there; pass --overwrite to replace", path=out)
    for name, store, plan, config_json in jobs:
        result = write_plan(store, plan, os.path.join(out, name), overwrite=overwrite, max_shard_size=max_shard_size,
                            progress=progress, config_json=config_json or plan.config_json)
        report["components"][name]["files"] = result.files
    if tok_dir is not None:
        report["components"]["tokenizer"] = {"files": _copy_files(tok_dir, os.path.join(out, "tokenizer"),
                                                                  TOKENIZER_FILES, overwrite)}
    if pipeline:
        _write_pipeline_files(out, variant, pipeline_class, overwrite)
    return report


def _write_pipeline_files(out: str, variant: str, pipeline_class: str, overwrite: bool) -> None:
    try:
        from diffusers import __version__ as diffusers_version
    except ImportError:  # pragma: no cover - diffusers is an optional dependency
        diffusers_version = "0.42.1"
    scheduler = dict(SCHEDULER_CONFIG, _diffusers_version=diffusers_version,
                     snr_shift_scale=3.0 if variant == "2b" else 1.0)
    _write_text(os.path.join(out, "scheduler", "scheduler_config.json"), json.dumps(scheduler, indent=2) + "\n", overwrite)
    index = {
        "_class_name": pipeline_class, "_diffusers_version": diffusers_version,
        "scheduler": ["diffusers", "CogVideoXDDIMScheduler"], "text_encoder": ["transformers", "T5EncoderModel"],
        "tokenizer": ["transformers", "T5Tokenizer"], "transformer": ["diffusers", "CogVideoXTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLCogVideoX"],
    }
    # Written last: a folder without model_index.json is not taken for a pipeline.
    _write_text(os.path.join(out, "model_index.json"), json.dumps(index, indent=2) + "\n", overwrite)


COMPONENT_FOLDERS = ("transformer", "vae", "text_encoder")


def _diffusers_components(src: str) -> dict[str, Any]:
    """Component stores of a pipeline folder, of sat2hf's components-only output (``transformer/``,
    ``vae/``, ... without ``model_index.json``), or of one model folder (recognised by its signature)."""
    from vqtool.io import open_checkpoint

    subfolders = [os.path.join(src, c) for c in COMPONENT_FOLDERS if os.path.isdir(os.path.join(src, c))]
    if not os.path.isfile(os.path.join(src, "model_index.json")) and subfolders:
        comps: dict[str, Any] = {}
        for sub in subfolders:
            comps.update(_diffusers_components(sub))
        return comps
    ckpt = open_checkpoint(src)
    if ckpt.format == "diffusers-pipeline":
        return dict(ckpt.components)
    if len(ckpt.components) == 1:  # one model folder or file: which component is it?
        (store,) = ckpt.components.values()
        ident = identify(store)  # by the declared signatures
        if ident is not None and ident.table.family in ("cogvideox", "t5") and ident.table.format != "sat":
            return {ident.table.component: store}
    raise InputError(f"not a CogVideoX Diffusers pipeline or model folder (found {ckpt.format})", path=src)


def diffusers_to_sat(src: str | os.PathLike, out: str | os.PathLike, *, iteration: str = DEFAULT_ITERATION,
                     dry_run: bool = False, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Convert a CogVideoX Diffusers pipeline (or a transformer / VAE folder) into a SAT folder.

    Writes ``transformer/latest`` and ``transformer/<iteration>/mp_rank_00_model_states.pt``
    (``{'module': sd}``, keys under ``model.diffusion_model.``), ``vae/3d-vae.pt``
    (``{'state_dict': sd}``) and, when the pipeline has a T5 and tokenizer, ``t5-v1_1-xxl/``.
    See the module docstring for what is regenerated or omitted. Returns a JSON-ready report.
    SAT's ``.pt`` is a single pickle, so the transformer's tensors are held in memory while it is
    written (about the model's size); the Diffusers side is read one tensor group at a time.
    """
    src, out = os.fspath(src), os.fspath(out)
    comps = _diffusers_components(src)
    report: dict[str, Any] = {"source": src, "output": out, "dry_run": dry_run, "components": {}}
    work = []
    if "transformer" in comps:
        ident = _identify(comps["transformer"], "transformer", "diffusers")
        plan = plan_conversion(comps["transformer"], "sat", ident=ident)
        extra = _regenerated(ident)
        summary = _summary(plan)
        summary["regenerated"] = [{"name": n, "reason": r} for n, _, r in extra]
        summary["omitted"] = _omitted(ident)
        report["variant"] = plan.variant
        report["components"]["transformer"] = summary
        work.append(("transformer", comps["transformer"], plan, extra))
    if "vae" in comps:
        plan = plan_conversion(comps["vae"], "sat", ident=_identify(comps["vae"], "vae", "diffusers"))
        report["components"]["vae"] = _summary(plan)
        work.append(("vae", comps["vae"], plan, []))
    if "text_encoder" in comps:
        plan = plan_conversion(comps["text_encoder"], "transformers",
                               ident=_identify(comps["text_encoder"], "text_encoder", "transformers"))
        report["components"]["text_encoder"] = _summary(plan)
        work.append(("text_encoder", comps["text_encoder"], plan, []))
    if not work:
        raise InputError("no CogVideoX transformer, VAE or T5 found", path=src)
    if dry_run:
        return report
    from vqtool.mapping.plan import iter_converted
    from vqtool.mapping.writer import write_plan

    if not overwrite:  # refuse before writing anything
        where = {"transformer": os.path.join("transformer", "latest"), "vae": os.path.join("vae", "3d-vae.pt"),
                 "text_encoder": T5_FOLDER}
        taken = [where[name] for name, *_ in work if os.path.exists(os.path.join(out, where[name]))]
        if taken:
            raise OutputExistsError(f"{', '.join(taken)} already there; pass --overwrite to replace", path=out)
    for name, store, plan, extra in work:
        if name == "transformer":
            items = list(iter_converted(store, plan)) + [(n, t) for n, t, _ in extra]
            path = write_transformer(out, items, iteration=iteration, overwrite=overwrite)
        elif name == "vae":
            path = write_vae(out, iter_converted(store, plan), overwrite=overwrite)
        else:
            folder = os.path.join(out, T5_FOLDER)
            path = write_plan(store, plan, folder, overwrite=overwrite, progress=progress,
                              config_json=store.config or plan.config_json).files[0]
            tok = os.path.join(os.path.dirname(os.path.dirname(store.files[0])), "tokenizer")
            if _has_tokenizer(tok):
                _copy_files(tok, folder, TOKENIZER_FILES, overwrite)
        report["components"][name]["files"] = [path]
    return report


def _regenerated(ident) -> list[tuple[str, Any, str]]:
    """Tensors hf2sat adds that Diffusers does not hold: (name, tensor, reason)."""
    import torch

    from vqtool.io.base import torch_dtype

    cfg = ident.graph.config
    if not cfg.get("use_rotary_positional_embeddings"):
        return []
    ref = ident.graph["patch_embed.text_proj.weight"]
    zeros = torch.zeros(ROTARY_LEFTOVER_ROWS, cfg["inner_dim"], dtype=torch_dtype(ref.dtype))
    return [(ROTARY_LEFTOVER, zeros, "SAT base-model position table, unused by rotary models; written as zeros "
             "so the file has SAT's own key set")]


def _omitted(ident) -> list[dict[str, str]]:
    cfg = ident.graph.config
    out = []
    if cfg.get("use_rotary_positional_embeddings") and not cfg.get("patch_size_t"):
        out += [{"name": f"mixins.pos_embed.{n}", "reason": "rotary table; SAT recomputes it at init (strict=False load)"}
                for n in ("freqs_sin", "freqs_cos")]
    if not cfg.get("use_rotary_positional_embeddings"):
        out.append({"name": "mixins.pos_embed.pos_embedding", "reason": "2B sincos table; SAT regenerates it in reinit"})
    return out


__all__ = ["COMPONENT_PREFIXES", "diffusers_to_sat", "sat_to_diffusers", "check_learned_positions"]
