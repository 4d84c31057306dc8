"""reference_infer on tiny pipelines: every task runs end to end, runs are reproducible, any weight format works.

Wan I2V (an input image) and VACE (a control video and a mask), CogVideoX T2V and I2V
through ``validate``; the reference transformer read from an original Wan file gives the
same video as from the pipeline folder; same inputs give bit-identical videos.
"""

from __future__ import annotations

import numpy as np
import pytest

from reference_infer.tasks import Request, Settings

SMALL = Settings(frames=5, height=32, width=32, steps=2)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _pipeline_and_ggufs(root, name, policies, transformer_dtype=None):
    from reference_infer.tiny import save_pipeline
    from vqtool.quant.run import quantize_model

    pipe = save_pipeline(name, root / name, transformer_dtype=transformer_dtype)
    targets = [(p, str(root / f"{name}-{p}.gguf")) for p in policies]
    quantize_model(str(pipe), targets, progress=False)
    return str(pipe), [t for _, t in targets]


def _validate(pipe, ggufs, out, settings=SMALL, **kwargs):
    from vqtool.validate.run import validate

    return validate(pipe, ggufs, str(out), prompts=["a cat runs"], seeds=[3], settings=settings, html=False,
                    weights=False, progress=False, threads=1, **kwargs)


def _psnr(report, name):
    c = next(c for c in report["candidates"] if c["name"] == name)
    return c["summary"]["psnr_mean"]


def test_task_registry_rejects_duplicates_and_unknown_pipelines():
    from reference_infer.tasks import TASKS, WanT2V, register, task_for_pipeline
    from vqtool.errors import DetectionError

    assert set(TASKS) == {"wan-t2v", "wan-i2v", "wan-vace", "cogvideox-t2v", "cogvideox-i2v"}
    with pytest.raises(ValueError, match="registered twice"):
        register(WanT2V())
    with pytest.raises(DetectionError, match="StableDiffusionPipeline"):
        task_for_pipeline("StableDiffusionPipeline")


def test_wan_i2v_runs_end_to_end_from_an_image_file(tmp_path):
    from reference_infer.inputs import synthetic_image

    pipe, ggufs = _pipeline_and_ggufs(tmp_path, "wan-i2v", ["f32", "q4_k_m"])
    image = tmp_path / "first.png"
    synthetic_image(40, 24).save(image)
    report = _validate(pipe, ggufs, tmp_path / "val", image=str(image))
    assert report["settings"]["task"] == "wan-i2v"
    assert _psnr(report, "f32") == "inf"
    assert 15 < _psnr(report, "q4_k_m") < 200
    assert report["reference"]["videos"][0]["frames"] == SMALL.frames


def test_wan_vace_runs_end_to_end_with_control_video_and_mask(tmp_path):
    from reference_infer.inputs import synthetic_control_video, synthetic_mask
    from vqtool.validate.video import write_mp4

    pipe, ggufs = _pipeline_and_ggufs(tmp_path, "wan-vace", ["q8_0", "q2_k"])
    control = np.stack([np.asarray(f) for f in synthetic_control_video(5, 32, 32)]) / 255.0
    mask = np.stack([np.asarray(m.convert("RGB")) for m in synthetic_mask(5, 32, 32)]) / 255.0
    write_mp4(control, str(tmp_path / "control.mp4"))
    write_mp4(mask, str(tmp_path / "mask.mp4"))
    report = _validate(pipe, ggufs, tmp_path / "val", control_video=str(tmp_path / "control.mp4"),
                       mask=str(tmp_path / "mask.mp4"))
    assert report["settings"]["task"] == "wan-vace"
    assert _psnr(report, "q8_0") > _psnr(report, "q2_k") > 10


def test_gguf_of_a_bf16_model_runs_with_its_bf16_embeddings(tmp_path):
    # Quantizing a BF16 source keeps embeddings in BF16; raw, they would make Wan's time embedder uint8.
    import torch

    pipe, ggufs = _pipeline_and_ggufs(tmp_path, "wan-t2v", ["mixed-q4"], transformer_dtype=torch.bfloat16)
    report = _validate(pipe, ggufs, tmp_path / "val")
    assert 20 < _psnr(report, "mixed-q4") < 200


def test_an_input_the_task_does_not_take_is_refused(tmp_path):
    from reference_infer.inputs import synthetic_image
    from vqtool.errors import InputError

    pipe, ggufs = _pipeline_and_ggufs(tmp_path, "wan-t2v", ["q8_0"])
    synthetic_image(32, 32).save(tmp_path / "i.png")
    with pytest.raises(InputError, match="--image given"):
        _validate(pipe, ggufs, tmp_path / "val", image=str(tmp_path / "i.png"))


@pytest.mark.parametrize("name", ["cogvideox-2b", "cogvideox-5b-i2v"])
def test_cogvideox_t2v_and_i2v_run_end_to_end(tmp_path, name):
    pipe, ggufs = _pipeline_and_ggufs(tmp_path, name, ["f32", "q4_0"])
    report = _validate(pipe, ggufs, tmp_path / "val", settings=Settings(frames=5, height=64, width=64, steps=2))
    assert report["settings"]["task"] == ("cogvideox-i2v" if "i2v" in name else "cogvideox-t2v")
    assert _psnr(report, "f32") == "inf"
    assert 10 < _psnr(report, "q4_0") < 200


@pytest.fixture(scope="module")
def wan_t2v(tmp_path_factory):
    from reference_infer.pipeline import ReferencePipeline
    from reference_infer.tiny import save_pipeline
    from reference_infer.transformer import load_transformer

    root = tmp_path_factory.mktemp("t2v")
    folder = save_pipeline("wan-t2v", root / "pipe")
    rp = ReferencePipeline(folder)
    rp.set_transformer(load_transformer(folder, dtype=rp.dtype))
    prepared = rp.prepare([Request("p0-s0", "a cat runs", 0)], SMALL)
    return root, folder, rp, prepared[0], rp.generate(prepared[0])


def test_same_inputs_give_bit_identical_videos_and_latents(wan_t2v):
    _, _, rp, prepared, first = wan_t2v
    again = rp.generate(prepared)
    assert np.array_equal(first.frames, again.frames)
    assert all((a == b).all() for a, b in zip(first.step_latents, again.step_latents))
    assert len(first.step_latents) == SMALL.steps and len(first.step_seconds) == SMALL.steps
    assert first.frames.shape == (SMALL.frames, SMALL.height, SMALL.width, 3)
    assert 0.0 <= first.frames.min() and first.frames.max() <= 1.0


def test_reference_from_an_original_wan_file_gives_the_same_video(wan_t2v):
    from diffusers import WanTransformer3DModel

    from reference_infer.transformer import load_transformer
    from vqtool.testing import wan

    root, folder, rp, prepared, first = wan_t2v
    original = wan.write_transformer(WanTransformer3DModel.from_pretrained(folder / "transformer"), root, "original")
    rp.set_transformer(load_transformer(original, dtype=rp.dtype))
    assert np.array_equal(rp.generate(prepared).frames, first.frames)


def test_vae_tiling_and_slicing_options_run_and_sequential_offload_needs_an_accelerator(wan_t2v):
    from reference_infer.pipeline import MemoryOptions, ReferencePipeline
    from reference_infer.transformer import load_transformer
    from vqtool.errors import InputError

    _, folder, _, prepared, first = wan_t2v
    rp = ReferencePipeline(folder, memory=MemoryOptions(vae_tiling=True, vae_slicing=True))
    rp.set_transformer(load_transformer(folder, dtype=rp.dtype))
    assert rp.generate(prepared).frames.shape == first.frames.shape
    seq = ReferencePipeline(folder, memory=MemoryOptions(offload="sequential"))
    with pytest.raises(InputError, match="accelerator"):
        seq.set_transformer(load_transformer(folder, dtype=seq.dtype))
    with pytest.raises(InputError, match="offload must be"):
        MemoryOptions(offload="disk")


def test_a_folder_without_model_index_is_refused_with_a_hint(tmp_path):
    from reference_infer.pipeline import ReferencePipeline
    from vqtool.errors import InputError

    with pytest.raises(InputError, match="--pipeline"):
        ReferencePipeline(tmp_path)


def test_gpu_benchmark_runs_on_a_tiny_model_with_both_gguf_loaders(tmp_path):
    from reference_infer.bench import markdown, run_bench

    result = run_bench(str(tmp_path), device="cpu", tiny=True, policies=("q4_k_m",), frames=5, height=32,
                       width=32, steps=1)
    assert [(r["model"], r["loader"]) for r in result["rows"]] == [
        ("float32", "diffusers"), ("q4_k_m", "vqtool"), ("q4_k_m", "diffusers")]
    assert all(r["seconds_per_step"] > 0 for r in result["rows"])
    assert markdown(result).count("\n") == 4 and (tmp_path / "bench.json").is_file()
