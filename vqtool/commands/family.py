"""``vqtool family``: the set of variants a publisher ships, one pass over the source, validated, with the card."""

from __future__ import annotations

import json
import os

import click

EPILOG = """\b
Examples:
  vqtool family Wan2.1-T2V-1.3B/ -o out/ --pipeline Wan2.1-T2V-1.3B-Diffusers/
  vqtool family model.safetensors -o out/ --policies q8_0,q5_k_m,q4_k_m,q3_k_m,mixed-q4,int8-weight-only \\
      --pipeline pipe/ --frames 17 --steps 20
  vqtool family bundled:tiny-wan2.1-t2v -o out/ --no-validate --dry-run
  vqtool upload out/ --repo-id me/Wan2.1-T2V-1.3B-GGUF                     # then publish it
\b
GGUF policies (`vqtool policies`) are written together, each source tensor read once; torchao
policies (int8-weight-only, int8-dynamic, float8-weight-only, float8-dynamic, int4-weight-only)
become Diffusers folders next to them. Validation goes to OUT/validation/, the card to OUT/README.md.
"""


@click.command("family", epilog=EPILOG)
@click.argument("src")
@click.option("-o", "--output", "out", required=True, help="Folder for the files, the validation report and README.md.")
@click.option("-p", "--policies", default=None, show_default=False,
              help="Comma-separated policies, GGUF and torchao [default: q8_0,q6_k,q5_k_m,q4_k_m,q3_k_m,mixed-q8,mixed-q4].")
@click.option("--name", help="File name stem (default: the source's name).")
@click.option("--pipeline", help="Diffusers pipeline folder for validation (text encoder, VAE, scheduler).")
@click.option("--no-validate", is_flag=True, help="Skip validation (the card shows n/a for PSNR/SSIM).")
@click.option("--prompt", "prompts", multiple=True, help="Validation prompt (repeatable; default: the built-in set).")
@click.option("--seeds", default="0", show_default=True, help="Validation seeds, comma-separated.")
@click.option("--frames", type=int, help="Validation frames.")
@click.option("--height", type=int, help="Validation height.")
@click.option("--width", type=int, help="Validation width.")
@click.option("--steps", type=int, help="Validation sampling steps.")
@click.option("--base-model", help="Card: Hub id of the source model (default: found from the files).")
@click.option("--license", "license_", help="Card: Hub license id (default: the base model's).")
@click.option("--repo-id", default=None, help="Card: the repo the files will go to (for the loading snippets).")
@click.option("--component", help="Which component of a multi-component folder (default: transformer).")
@click.option("--torchao-dtype", default="bf16", show_default=True, type=click.Choice(["bf16", "f16", "f32"]),
              help="dtype of torchao variants' unquantized weights and activations.")
@click.option("--device", default="cpu", show_default=True, help="Where to quantize and validate: cpu or cuda.")
@click.option("--threads", type=int, help="CPU threads for encoding and validation (1 is fastest for tiny models).")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--dry-run", is_flag=True, help="List the outputs and each GGUF plan's size; write nothing.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def command(src, out, policies, name, pipeline, no_validate, prompts, seeds, frames, height, width, steps, base_model,
            license_, repo_id, component, torchao_dtype, device, threads, overwrite, dry_run, as_json):
    """Quantize SRC into every policy of a published family (one read of the
    source for all GGUF files), export the torchao ones, validate them all
    against SRC and write the model card into OUT."""
    from vqtool.publish.card import CardInfo
    from vqtool.publish.family import DEFAULT_POLICIES, make_family, source_stem

    chosen = [p.strip() for p in (policies or ",".join(DEFAULT_POLICIES)).split(",") if p.strip()]
    if dry_run:
        _dry_run(src, out, chosen, name, component, as_json)
        return
    options = {"seeds": [int(s) for s in seeds.split(",") if s.strip()], "device": device, "threads": threads}
    if prompts:
        options["prompts"] = list(prompts)
    if any(v is not None for v in (frames, height, width, steps)):
        from reference_infer.tasks import Settings

        options["settings"] = Settings(frames=frames, height=height, width=width, steps=steps)
    info = CardInfo(repo_id=repo_id or f"ORG/{name or source_stem(src)}", base_model=base_model, license=license_)
    result = make_family(src, out, chosen, pipeline=pipeline, validate=not no_validate, validate_options=options,
                         info=info, name=name, component=component, overwrite=overwrite, device=device,
                         threads=threads, torchao_dtype=torchao_dtype, progress=not as_json)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    _summary(result)


def _dry_run(src, out, chosen, name, component, as_json):
    from vqtool.inspect import human_bytes
    from vqtool.io import open_store
    from vqtool.publish.family import output_paths, split_policies
    from vqtool.quant.run import plan_policies

    gguf, torchao = split_policies(chosen)
    targets = output_paths(src, out, gguf, torchao, name)
    with open_store(src, component) as store:
        _, plans = plan_policies(store, gguf)
    sizes = {p: plan for p, plan in zip(gguf, plans)}
    rows = [{"policy": p, "kind": kind, "output": path,
             "tensor_bytes": sizes[p].total_bytes if p in sizes else None,
             "bits_per_weight": round(sizes[p].bits_per_weight, 3) if p in sizes else None} for p, kind, path in targets]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        size = f"{human_bytes(r['tensor_bytes']):>10}  {r['bits_per_weight']:6.3f} bpw" if r["tensor_bytes"] else \
            f"{'(torchao)':>10}"
        click.echo(f"  {r['policy']:<18} {size}  {r['output']}")


def _summary(result):
    from vqtool.inspect import human_bytes
    from vqtool.publish.reports import format_psnr, format_ssim, metrics_by_file

    metrics = metrics_by_file([result.report]) if result.report else {}
    click.echo(f"{'policy':<18} {'kind':<8} {'size':>10} {'bpw':>7} {'PSNR':>11} {'SSIM':>7}  file")
    for o in result.outputs:
        m = metrics.get(os.path.basename(os.path.normpath(o.path)))
        bpw = f"{o.bits_per_weight:.3f}" if o.bits_per_weight else "n/a"
        click.echo(f"{o.policy:<18} {o.kind:<8} {human_bytes(o.bytes):>10} {bpw:>7} "
                   f"{format_psnr(m.psnr if m else None):>11} {format_ssim(m.ssim if m else None):>7}  {o.path}")
    for w in result.warnings:
        click.echo(f"warning: {w}")
    if result.report:
        click.echo(f"report: {result.report}")
    click.echo(f"card:   {result.card}   (publish with: vqtool upload {result.folder} --repo-id ORG/NAME)")
