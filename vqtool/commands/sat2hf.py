"""``vqtool sat2hf``: a CogVideoX SAT folder -> Diffusers component folders or a whole pipeline."""

from __future__ import annotations

import json

import click

from vqtool.errors import InputError

EPILOG = """\b
Examples:
  vqtool sat2hf CogVideoX-2b-sat -o CogVideoX-2b-diffusers
  vqtool sat2hf CogVideoX-5b-sat -o cogvideox-5b --t5 CogVideoX-5b-sat/t5-v1_1-xxl
  vqtool sat2hf my-finetune-sat -o out --t5 t5-v1_1-xxl --tokenizer t5-v1_1-xxl --overwrite
  vqtool sat2hf CogVideoX-5b-I2V-sat -o i2v --dry-run --json
  vqtool sat2hf tiny-i2v-sat -o out --config sample_height=8 --config sample_width=8

\b
Writes transformer/ and vae/ (safetensors + config.json). With a T5 (--t5, the
SAT folder's t5*/ folder, or the T5 keys of a full fine-tune) and a tokenizer
(--tokenizer, or the T5 folder's own files) it also writes text_encoder/,
tokenizer/, scheduler/ and model_index.json, loadable by CogVideoXPipeline or
CogVideoXImageToVideoPipeline. Dropped keys (freqs_*, the unused SAT
position_embeddings, VAE loss.*) are listed in --json output.
"""


def parse_config_items(items: tuple[str, ...]) -> dict:
    """``("sample_height=8", "use_rotary_positional_embeddings=true")`` -> dict; values read as JSON when they can be."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--config expects KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


@click.command("sat2hf", epilog=EPILOG)
@click.argument("sat_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False),
              help="Diffusers folder to write (created).")
@click.option("--t5", type=click.Path(exists=True, file_okay=False), help="T5 encoder folder (transformers layout).")
@click.option("--tokenizer", type=click.Path(exists=True, file_okay=False), help="T5 tokenizer folder.")
@click.option("--config", "config_items", multiple=True, metavar="KEY=VALUE",
              help="Override a derived transformer config value (sample size, text length, rotary); repeatable.")
@click.option("--max-shard-size", default="5GB", show_default=True, help="Shard safetensors files past this size.")
@click.option("--dry-run", is_flag=True, help="Plan and print; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
def command(sat_dir, output, t5, tokenizer, config_items, max_shard_size, dry_run, as_json, overwrite) -> None:
    """Convert a CogVideoX SAT checkpoint folder (2B, 5B, 5B-I2V, 1.5, 1.5-I2V)
    into Diffusers format, one tensor group at a time."""
    from vqtool.sat_convert import sat_to_diffusers

    report = sat_to_diffusers(sat_dir, output, t5=t5, tokenizer=tokenizer, config=parse_config_items(config_items),
                              dry_run=dry_run, overwrite=overwrite, max_shard_size=max_shard_size,
                              progress=not as_json)
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    verb = "would write" if dry_run else "wrote"
    click.echo(f"CogVideoX {report['variant']}: {verb} {output}")
    for name, comp in report["components"].items():
        count = f"{comp['tensors']} tensors, {comp['total_bytes'] / 1e6:.1f} MB" if "tensors" in comp else "copied"
        click.echo(f"  {name:13s} {count}" + (f"; dropped {len(comp['ignored'])}" if comp.get("ignored") else ""))
    if report["pipeline"]:
        click.echo(f"  pipeline      {report['pipeline']} (model_index.json, scheduler)")
    else:
        click.echo(f"  no pipeline folder: missing {', '.join(report['pipeline_missing'])}")
