"""``vqtool validate``: reference videos vs quantized candidates, with metrics, videos and reports."""

from __future__ import annotations

import json

import click

EPILOG = """\b
Examples:
  vqtool validate --reference Wan2.1-T2V-1.3B-Diffusers/ --candidate wan-mixed-q4.gguf -o val/
  vqtool validate --reference wan_t2v_1.3B.safetensors --pipeline Wan2.1-T2V-1.3B-Diffusers/ \\
      --candidate q8_0.gguf --candidate q4_k_m.gguf --frames 33 --steps 20 -o val/ --device cuda
  vqtool validate --reference bundled:tiny-wan2.1-t2v-pipeline --candidate q4.gguf \\
      --prompt "a cat runs" --seed 0 --seed 1 --frames 9 --height 32 --width 32 --steps 3 -o val/
  vqtool validate --reference Wan2.1-I2V-14B-480P-Diffusers/ --candidate i2v-q4.gguf --image first.png -o val/
  vqtool validate --reference Wan2.1-VACE-1.3B-diffusers/ --candidate vace-q4.gguf \\
      --control-video depth.mp4 --mask mask.mp4 -o val/
  vqtool check val/report.json --min-psnr 25 --min-ssim 0.8        # then gate CI on the result
"""


@click.command("validate", epilog=EPILOG)
@click.option("--reference", "-r", required=True, help="Full-precision transformer (any format), or a pipeline folder.")
@click.option("--candidate", "-c", "candidates", multiple=True, required=True,
              help="Quantized transformer to compare (a vqtool GGUF; repeatable: the reference videos are reused).")
@click.option("--pipeline", help="Diffusers pipeline folder for text encoder, VAE, tokenizer, scheduler "
                                 "(default: the reference, when it is one). bundled:NAME works too.")
@click.option("-o", "--output", "out", default="vqtool-validate", show_default=True, help="Output folder.")
@click.option("--prompt", "prompt_list", multiple=True, help="A prompt (repeatable). Default: the built-in set.")
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False), help="Prompts file, one a line.")
@click.option("--seed", "seeds", type=int, multiple=True, help="Seed (repeatable; default 0).")
@click.option("--frames", type=int, help="Frames per video (Wan: 4k+1; default: the model's).")
@click.option("--height", type=int, help="Height in pixels.")
@click.option("--width", type=int, help="Width in pixels.")
@click.option("--steps", type=int, help="Sampling steps.")
@click.option("--guidance", type=float, help="Classifier-free guidance scale (1 turns it off).")
@click.option("--negative-prompt", default="", help="Negative prompt.")
@click.option("--max-sequence-length", type=int, help="Text tokens (Wan 512, CogVideoX 226 by default).")
@click.option("--fps", type=int, help="Frame rate of the written videos.")
@click.option("--image", type=click.Path(dir_okay=False), help="I2V: the input image (default: a synthetic picture).")
@click.option("--control-video", type=click.Path(dir_okay=False), help="VACE: control video (default: synthetic).")
@click.option("--mask", type=click.Path(dir_okay=False), help="VACE: mask video or image, white = generate.")
@click.option("--dtype", default="auto", show_default=True, help="Compute dtype: auto (f32 on CPU, bf16 on GPU), f32, f16, bf16.")
@click.option("--vae-dtype", default="f32", show_default=True, help="VAE dtype.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:1, ...")
@click.option("--offload", type=click.Choice(["none", "model", "sequential"]), default="none", show_default=True,
              help="CPU offload: whole models (model) or layer by layer (sequential; lowest VRAM).")
@click.option("--vae-tiling", is_flag=True, help="Decode the VAE in tiles (less memory at high resolution).")
@click.option("--vae-slicing", is_flag=True, help="Decode the VAE one video at a time.")
@click.option("--threads", type=int, help="torch CPU threads (default: torch's; 1 is fastest for tiny models).")
@click.option("--no-weights", is_flag=True, help="Skip the per-layer weight error table.")
@click.option("--no-html", is_flag=True, help="Write report.json only.")
@click.option("--json", "as_json", is_flag=True, help="Print each candidate's summary as JSON.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
def command(reference, candidates, pipeline, out, prompt_list, prompts_file, seeds, frames, height, width, steps,
            guidance, negative_prompt, max_sequence_length, fps, image, control_video, mask, dtype, vae_dtype, device,
            offload, vae_tiling, vae_slicing, threads, no_weights, no_html, as_json, overwrite):
    """Generate videos with the full-precision REFERENCE and with each
    CANDIDATE from the same text embeddings and initial noise, then measure
    PSNR, SSIM, temporal flicker, the latent error at each step and the
    per-layer weight error. Writes MP4s (each and reference | candidate |
    difference x10), report.json and report.html into the output folder."""
    from reference_infer.inputs import read_prompts
    from reference_infer.pipeline import MemoryOptions
    from reference_infer.tasks import Settings
    from vqtool.validate.report import render_summary
    from vqtool.validate.run import validate

    prompts = list(prompt_list) + (read_prompts(prompts_file) if prompts_file else [])
    settings = Settings(frames=frames, height=height, width=width, steps=steps, guidance=guidance,
                        negative_prompt=negative_prompt, max_sequence_length=max_sequence_length, fps=fps)
    report = validate(reference, list(candidates), out, pipeline=pipeline, prompts=prompts or None,
                      seeds=list(seeds) or [0], settings=settings, dtype=dtype, vae_dtype=vae_dtype, device=device,
                      memory=MemoryOptions(offload=offload, vae_tiling=vae_tiling, vae_slicing=vae_slicing),
                      image=image, control_video=control_video, mask=mask, weights=not no_weights,
                      html=not no_html, overwrite=overwrite, threads=threads, progress=not as_json)
    if as_json:
        click.echo(json.dumps({c["name"]: c["summary"] for c in report["candidates"]}, indent=2))
        return
    click.echo(render_summary(report))
    click.echo(f"report: {out}/report.json" + ("" if no_html else f" and {out}/report.html"))
