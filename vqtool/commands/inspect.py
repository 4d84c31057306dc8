"""``vqtool inspect``: what a checkpoint is, from its headers alone."""

from __future__ import annotations

import json

import click

EPILOG = """\b
Examples:
  vqtool inspect bundled:tiny-wan2.1-t2v
  vqtool inspect Wan2.1-T2V-14B/ --tensors
  vqtool inspect wan2.1-t2v-1.3b-Q4_K_M.gguf --json | jq '.components[].gguf.bits_per_weight_by_role'
  vqtool inspect CogVideoX-5b-sat/transformer/1000/mp_rank_00_model_states.pt
"""


@click.command("inspect", epilog=EPILOG)
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print the complete report as JSON.")
@click.option("--tensors", is_flag=True, help="Also list every tensor (name, shape, dtype, role, bytes).")
def command(path: str, as_json: bool, tensors: bool) -> None:
    """Show format, model (family/variant/component), tensor and parameter
    counts, dtype histogram and sizes of PATH: a file, a shard index, or a
    Diffusers / SAT / original Wan folder. For GGUF files also the metadata,
    per-tensor GGML types and bits per weight by role. Reads headers only."""
    from vqtool.inspect import describe, render

    report = describe(path)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        click.echo(render(report, show_tensors=tensors))
