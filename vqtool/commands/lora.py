"""``vqtool lora``: SAT LoRA export and LoRA extraction (the library lives in :mod:`vqtool.lora`)."""

from __future__ import annotations

import json

import click

FORMAT_HELP = ("Output format: diffusers (PEFT keys for diffusers' load_lora_weights), comfy (kohya "
               "lora_down/lora_up/alpha on original names, for ComfyUI) or gguf (llama.cpp LoRA adapter).")

GROUP_EPILOG = """\b
Examples:
  vqtool lora export-sat CogVideoX-5b-sat-lora/ -o pytorch_lora_weights.safetensors
  vqtool lora extract --base Wan2.1-T2V-1.3B/ --tuned my-finetune.safetensors --rank 32 -o lora.safetensors
  vqtool lora extract --base Wan2.1-T2V-1.3B/ --tuned tuned/ --energy 0.9 --max-rank 64 --format comfy -o lora.safetensors
"""


@click.group("lora", epilog=GROUP_EPILOG)
def command() -> None:
    """LoRA adapters: convert CogVideoX SAT LoRAs, extract LoRAs from fine-tuned checkpoints.

    (Quantization-recovery adapters: `vqtool quantize ... --recovery-rank R`.)"""


EXPORT_EPILOG = """\b
Examples:
  vqtool lora export-sat CogVideoX-5b-sat-lora/ -o pytorch_lora_weights.safetensors
  vqtool lora export-sat ckpt/transformer/1000/mp_rank_00_model_states.pt -o lora.safetensors --alpha 1
  vqtool lora export-sat CogVideoX-5b-sat-lora/ -o lora.safetensors --dry-run --json

\b
The LoRA is written with scale 1: SAT's alpha / r is folded into lora_B, so
pipe.load_lora_weights("lora.safetensors") reproduces the SAT model as is (do not add
CogVideo's set_adapters(..., [alpha / r]) compensation).
"""


@command.command("export-sat", epilog=EXPORT_EPILOG)
@click.argument("src")
@click.option("-o", "--output", "out", required=True, help="Output file (.safetensors, or .gguf with --format gguf).")
@click.option("--alpha", type=float, help="SAT lora_alpha used in training (default 1, SAT's default).")
@click.option("--format", "fmt", type=click.Choice(["diffusers", "comfy", "gguf"]), default="diffusers",
              show_default=True, help=FORMAT_HELP)
@click.option("--dtype", type=click.Choice(["auto", "f32", "f16", "bf16"]), default="auto", show_default=True,
              help="Factor dtype; auto keeps the checkpoint's.")
@click.option("--dry-run", is_flag=True, help="List the layers and ranks found; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def export_sat_command(src, out, alpha, fmt, dtype, dry_run, as_json, overwrite):
    """Convert a CogVideoX SAT LoRA checkpoint SRC (a SAT folder or its
    mp_rank_00_model_states.pt; matrix_A/matrix_B on query_key_value and dense,
    any number of layers) into a Diffusers/PEFT LoRA."""
    from vqtool.lora.export_sat import export_sat

    result = export_sat(src, out, alpha=alpha, fmt=fmt, dtype=dtype, overwrite=overwrite, dry_run=dry_run)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    verb = "would write" if dry_run else "wrote"
    click.echo(f"{src}: {result['modules']} SAT LoRA modules -> {result['layers']} layers, rank "
               f"{', '.join(map(str, result['ranks']))}, alpha {result['alpha']} (alpha / r folded into lora_B)")
    click.echo(f"  left out: {result['ignored']} tensors ({'; '.join(result['ignored_reasons']) or 'none'})")
    click.echo(f"{verb} {out} ({fmt}, {result['dtype']})")


EXTRACT_EPILOG = """\b
Examples:
  vqtool lora extract --base Wan2.1-T2V-1.3B/ --tuned finetune.safetensors --rank 32 -o lora.safetensors
  vqtool lora extract --base base/ --tuned tuned/ --energy 0.9 --max-rank 128 -o lora.safetensors
  vqtool lora extract --base base/ --tuned tuned/ --ratio 0.05 --clamp-quantile 0.99 -o lora.safetensors
  vqtool lora extract --base base/ --tuned tuned/ --rank 16 --format comfy --include 'blocks.*' -o lora.safetensors
  vqtool lora extract --base base/ --tuned tuned/ --rank 16 --format gguf -o lora.gguf
  vqtool lora extract --base base/ --tuned tuned/ --rank 16 --dry-run      # layers it would factor

\b
Rank: --rank R (fixed), --energy E (smallest rank keeping a fraction E of each
difference's squared Frobenius norm) or --ratio P (singular values above P x the
largest); --max-rank caps the dynamic rules. Changed tensors a LoRA cannot carry
(biases, norms, modulation, convolutions) are listed, never dropped silently.
"""


@command.command("extract", epilog=EXTRACT_EPILOG)
@click.option("--base", required=True, help="The base model (any format vqtool reads).")
@click.option("--tuned", required=True, help="The fine-tuned model (same architecture, any format).")
@click.option("-o", "--output", "out", help="Output file (.safetensors, or .gguf with --format gguf).")
@click.option("--rank", type=int, help="Fixed rank for every layer.")
@click.option("--energy", type=float, help="Per-layer rank keeping this fraction of the squared Frobenius norm.")
@click.option("--ratio", type=float, help="Per-layer rank: singular values above this fraction of the largest.")
@click.option("--max-rank", type=int, help="Cap for --energy / --ratio.")
@click.option("--clamp-quantile", type=float, help="Clip both factors at this quantile of their |values| (kohya: 0.99).")
@click.option("--min-diff", type=float, default=0.0, show_default=True,
              help="Leave out layers whose |dW| / |W| is at most this.")
@click.option("--format", "fmt", type=click.Choice(["diffusers", "comfy", "gguf"]), default="diffusers",
              show_default=True, help=FORMAT_HELP)
@click.option("--dtype", type=click.Choice(["f32", "f16", "bf16"]), default="bf16", show_default=True, help="Factor dtype.")
@click.option("--include", multiple=True, metavar="GLOB", help="Only these layers: canonical-name glob or role:ROLE (repeatable).")
@click.option("--exclude", multiple=True, metavar="GLOB", help="Not these layers (repeatable).")
@click.option("--component", help="Which component of a multi-component folder (default: transformer).")
@click.option("--device", help="Where to run the SVDs (cpu, cuda). Default: cpu.")
@click.option("--layers/--no-layers", "per_layer", default=True, show_default=True, help="Print the per-layer report.")
@click.option("--dry-run", is_flag=True, help="Pair the models and list the layers; read no tensor data.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable report.")
@click.option("--overwrite", is_flag=True, help="Replace an existing output file.")
def extract_command(base, tuned, out, rank, energy, ratio, max_rank, clamp_quantile, min_diff, fmt, dtype, include,
                    exclude, component, device, per_layer, dry_run, as_json, overwrite):
    """Extract a LoRA approximating TUNED - BASE: an SVD per Linear layer, with a
    fixed or per-layer rank, and a report of the energy each layer keeps."""
    from vqtool.lora.extract import extract, render_report

    result = extract(base, tuned, out, rank=rank, energy=energy, ratio=ratio, max_rank=max_rank,
                     clamp_quantile=clamp_quantile, min_diff=min_diff, fmt=fmt, dtype=dtype, include=list(include),
                     exclude=list(exclude), component=component, device=device, dry_run=dry_run,
                     overwrite=overwrite, progress=not as_json)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    elif dry_run:
        click.echo(f"{result['family']} {result['variant']}: {len(result['layers'])} layers to factor ({result['rule']}):")
        for row in result["layers"]:
            click.echo(f"  {row['name']}  {'x'.join(map(str, row['shape']))}  {row['role']}")
    else:
        click.echo(render_report(result, per_layer=per_layer))
