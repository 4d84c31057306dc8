"""``vqtool dequantize``: GGUF back to full-precision safetensors."""

from __future__ import annotations

import json

import click


@click.command("dequantize", epilog="""\b
Examples:
  vqtool dequantize wan-q4_k_m.gguf -o wan-q4_k_m.safetensors              # original Wan names
  vqtool dequantize wan-q4_k_m.gguf -o transformer/ --to diffusers --dtype bf16
""")
@click.argument("src")
@click.option("-o", "--output", "out", required=True, help="A .safetensors file or a folder (Diffusers: config.json too).")
@click.option("--to", "to", help="Target naming: diffusers, original, sat (default: the GGUF's own naming).")
@click.option("--dtype", type=click.Choice(["auto", "f32", "f16", "bf16"]), default="auto", show_default=True,
              help="auto: stored floats keep their type, dequantized tensors become F32.")
@click.option("--max-shard-size", default="5GB", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--json", "as_json", is_flag=True)
def command(src, out, to, dtype, max_shard_size, overwrite, as_json):
    """Dequantize a vqtool (or ComfyUI-GGUF) GGUF file SRC into safetensors, for
    tools that do not read GGUF. Streams one tensor at a time; atomic."""
    from vqtool.quant.dequantize import dequantize_file

    result = dequantize_file(src, out, to=to, dtype=dtype, max_shard_size=max_shard_size, overwrite=overwrite,
                             progress=not as_json)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        click.echo(f"wrote {result['tensors']} tensors ({result['bytes'] / 1e6:.1f} MB) as {result['to']} to {', '.join(result['files'])}")
