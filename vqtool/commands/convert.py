"""``vqtool convert``: rename a checkpoint between layouts (upstream Wan / ComfyUI / Diffusers ...)."""

from __future__ import annotations

import json

import click

EPILOG = """\b
Examples:
  vqtool convert Wan2.1-T2V-1.3B/ -o Wan2.1-T2V-1.3B-Diffusers/ --to diffusers
  vqtool convert wan2.1_t2v_1.3B_fp16.safetensors -o transformer/ --to diffusers
  vqtool convert Wan2.1-T2V-1.3B-Diffusers/transformer -o wan.safetensors --to original \\
      --prefix model.diffusion_model.               # a ComfyUI-style single file
  vqtool convert Wan2.1-T2V-14B/ -o out/ --to diffusers --component vae --dry-run --json
"""


@click.command("convert", epilog=EPILOG)
@click.argument("src")
@click.option("-o", "--output", "out", required=True, help="Output folder (or a .safetensors file path).")
@click.option("--to", "to", required=True, help="Target layout: diffusers, original (Wan), sat (CogVideoX), ...")
@click.option("--component", help="Only this component (transformer, vae, text_encoder).")
@click.option("--prefix", default="", help="Prefix for every written name, e.g. model.diffusion_model. (ComfyUI).")
@click.option("--max-shard-size", default="5GB", show_default=True, help="Split output into shards past this size.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--dry-run", is_flag=True, help="Show the plan (names, shapes, dtypes); write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
def command(src: str, out: str, to: str, component: str | None, prefix: str, max_shard_size: str, overwrite: bool,
            dry_run: bool, as_json: bool, no_progress: bool) -> None:
    """Convert SRC (a file, shard index, or Diffusers / SAT / original Wan folder)
    to another layout, streaming one tensor group at a time. Every source tensor
    is mapped or explicitly ignored; unknown or missing tensors are an error that
    lists them. Writes safetensors (sharded with an index past --max-shard-size)
    and config.json for Diffusers targets, atomically."""
    from vqtool.mapping.convert import convert

    result = convert(src, out, to=to, component=component, dry_run=dry_run, overwrite=overwrite,
                     max_shard_size=max_shard_size, prefix=prefix, progress=not (no_progress or as_json))
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    for c in result["components"]:
        head = f"{c['component']}: {c['family']} {c['variant']} {c['from']} -> {c['to']}"
        if dry_run:
            click.echo(f"{head}: would write {c['tensors']} tensors, {c['total_bytes'] / 1e9:.3f} GB to {c['output']}")
            for t in c["plan"]:
                click.echo(f"  {t['name']}  {t['shape']}  {t['dtype']}")
        else:
            w = c["written"]
            click.echo(f"{head}: wrote {w['tensors']} tensors, {w['total_bytes'] / 1e9:.3f} GB in "
                       f"{len(w['files'])} file(s) to {c['output']}")
        for ig in c["ignored"]:
            click.echo(f"  ignored {ig['name']}: {ig['reason']}")
