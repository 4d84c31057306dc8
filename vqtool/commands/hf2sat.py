"""``vqtool hf2sat``: a CogVideoX Diffusers folder -> the SAT checkpoint folder layout."""

from __future__ import annotations

import json

import click

EPILOG = """\b
Examples:
  vqtool hf2sat CogVideoX-5b -o CogVideoX-5b-sat
  vqtool hf2sat CogVideoX-2b/transformer -o sat-2b --iteration 1000
  vqtool hf2sat CogVideoX-5b-I2V -o sat --dry-run --json

\b
Writes transformer/latest, transformer/<iteration>/mp_rank_00_model_states.pt
({'module': sd}, keys under model.diffusion_model.), vae/3d-vae.pt
({'state_dict': sd}) and, for a pipeline with a T5, t5-v1_1-xxl/. SAT loads
with strict=False: the rotary freqs_* buffers and the 2B sincos table are
omitted (SAT recomputes them); rotary models get SAT's unused
transformer.position_embeddings.weight as zeros.
"""


@click.command("hf2sat", epilog=EPILOG)
@click.argument("diffusers_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="SAT folder to write (created).")
@click.option("--iteration", default="1", show_default=True, help="Iteration number written to transformer/latest.")
@click.option("--dry-run", is_flag=True, help="Plan and print; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def command(diffusers_dir, output, iteration, dry_run, as_json, overwrite) -> None:
    """Convert a CogVideoX Diffusers pipeline, transformer or VAE folder into
    the SAT layout that CogVideo's sat/ scripts load."""
    from vqtool.sat_convert import diffusers_to_sat

    report = diffusers_to_sat(diffusers_dir, output, iteration=iteration, dry_run=dry_run, overwrite=overwrite,
                              progress=not as_json)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    verb = "would write" if dry_run else "wrote"
    what = f"CogVideoX {report['variant']}" if "variant" in report else "CogVideoX"
    click.echo(f"{what}: {verb} {output}")
    for name, comp in report["components"].items():
        click.echo(f"  {name:13s} {comp['tensors']} tensors, {comp['total_bytes'] / 1e6:.1f} MB")
        for item in comp.get("regenerated", []) + comp.get("omitted", []):
            click.echo(f"    {item['name']}: {item['reason']}")
