"""``vqtool quantize``: policies -> GGUF, one pass over the source."""

from __future__ import annotations

import json
import os

import click

EPILOG = """\b
Examples:
  vqtool quantize Wan2.1-T2V-1.3B/ --policy mixed-q4 -o wan-1.3b-mixed-q4.gguf
  vqtool quantize Wan2.1-T2V-14B/ --policy q4_k_m --dry-run
  vqtool quantize model.safetensors --policy mixed-q4,q8_0,q4_k_m -o out/      # one read, three files
  vqtool quantize model.safetensors --policy q4_k_m --override 'blocks.0.*=Q8_0' \\
      --override 'role:ffn.down=Q6_K' -o custom.gguf
  vqtool quantize model.safetensors --policy my-policy.toml --imatrix imatrix.gguf -o out.gguf
  vqtool quantize model.safetensors --policy q4_k_m --recovery-rank 32 -o out.gguf    # + out.recovery-r32.safetensors
  vqtool policies                                                               # what each policy keeps
  vqtool quantize Wan2.1-T2V-1.3B/ --format torchao --policy int8-weight-only -o wan-int8/   # Diffusers + torchao
"""


def output_paths(src: str, policies: list[str], out: str | None) -> list[tuple[str, str]]:
    """Where each policy's file goes: ``-o FILE`` (one policy), ``-o DIR`` or a ``{policy}`` template."""
    from vqtool.errors import VqtoolError

    stem = os.path.basename(os.path.normpath(src.split(":", 1)[-1]))
    for ext in (".safetensors.index.json", ".safetensors", ".gguf", ".pt", ".pth", ".bin", ".ckpt"):
        if stem.endswith(ext):
            stem = stem[: -len(ext)]
    names = [os.path.splitext(os.path.basename(p))[0] if p.endswith(".toml") else p for p in policies]
    if out is None:
        out = "."
    if "{policy}" in out:
        return [(p, out.replace("{policy}", n)) for p, n in zip(policies, names)]
    if out.endswith(".gguf"):
        if len(policies) > 1:
            raise VqtoolError("several policies need -o DIR or a '{policy}' template, e.g. -o 'out/model-{policy}.gguf'")
        return [(policies[0], out)]
    return [(p, os.path.join(out, f"{stem}-{n}.gguf")) for p, n in zip(policies, names)]


@click.command("quantize", epilog=EPILOG)
@click.argument("src")
@click.option("-p", "--policy", "policy", default="mixed-q4", show_default=True,
              help="Policy name(s), comma-separated, or a policy .toml file. See `vqtool policies`.")
@click.option("-o", "--output", "out", help="Output .gguf (one policy), folder, or template with {policy}. Default: current folder.")
@click.option("--component", help="Which component of a multi-component folder (default: transformer).")
@click.option("--override", "overrides", multiple=True, metavar="PATTERN=TYPE",
              help="Per-tensor override before the policy's rules: name glob or role:ROLE (repeatable).")
@click.option("--imatrix", type=click.Path(dir_okay=False), help="Importance matrix (llama.cpp GGUF or .dat format).")
@click.option("--dry-run", is_flag=True, help="Print the plan (types per role and block, sizes, fallbacks); write nothing.")
@click.option("--tensors", is_flag=True, help="With --dry-run: also list every tensor's decision.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--overwrite", is_flag=True, help="Replace existing output files.")
@click.option("--device", default="cpu", show_default=True, help="Where to encode: cpu or cuda.")
@click.option("--threads", type=int, help="CPU threads for encoding (default: all cores).")
@click.option("--no-hash", is_flag=True, help="Skip hashing the source files into the metadata.")
@click.option("--format", "fmt", type=click.Choice(["gguf", "torchao"]), default="gguf", show_default=True,
              help="torchao: a Diffusers folder quantized with torchao (policies int8-weight-only, int8-dynamic, "
                   "float8-weight-only, float8-dynamic, int4-weight-only; mappings/policies/40-torchao.toml).")
@click.option("--torchao-dtype", default="bf16", show_default=True, type=click.Choice(["bf16", "f16", "f32"]),
              help="With --format torchao: dtype of unquantized weights and activations.")
@click.option("--recovery-rank", type=int, metavar="R",
              help="Also write a rank-R LoRA approximating each quantized layer's error (W - dequant(quant(W))), "
                   "imatrix-weighted with --imatrix, next to each GGUF as <name>.recovery-rR.safetensors.")
@click.option("--recovery-format", type=click.Choice(["diffusers", "comfy", "gguf"]), default="diffusers",
              show_default=True, help="Format of the recovery LoRA (see `vqtool lora --help`).")
def command(src, policy, out, component, overrides, imatrix, dry_run, tensors, as_json, overwrite, device, threads, no_hash,
            fmt, torchao_dtype, recovery_rank, recovery_format):
    """Quantize the transformer in SRC (any format vqtool reads) to GGUF with
    per-layer mixed-precision POLICY. Several comma-separated policies read
    each source tensor once. Files load in ComfyUI-GGUF and diffusers
    (`from_single_file` + GGUFQuantizationConfig) for Wan; CogVideoX files
    load with vqtool's own loader."""
    if fmt == "torchao":  # publishing's torchao export (vqtool/publish/torchao_export.py)
        from vqtool.publish.torchao_export import quantize_command

        click.echo(quantize_command(src, policy, out, component=component, dtype=torchao_dtype, device=device,
                                    overwrite=overwrite, dry_run=dry_run, as_json=as_json, hash_sources=not no_hash,
                                    unsupported={"--override": overrides, "--imatrix": imatrix, "--tensors": tensors,
                                                 "--recovery-rank": recovery_rank}))
        return
    from vqtool.io import open_store
    from vqtool.quant.report import render_plan
    from vqtool.quant.run import plan_policies, quantize_model

    policies = [p.strip() for p in policy.split(",") if p.strip()]
    targets = output_paths(src, policies, out)
    if dry_run:
        with open_store(src, component) as store:
            _, plans = plan_policies(store, policies, list(overrides))
        if as_json:
            click.echo(json.dumps([{"output": path, **plan.to_dict(tensors=tensors)} for (_, path), plan in zip(targets, plans)], indent=2))
        else:
            click.echo("\n\n".join(render_plan(plan, path, per_tensor=tensors) for (_, path), plan in zip(targets, plans)))
        return
    builders = hook = recovery = None
    if recovery_rank:  # the LoRA capability's recovery adapter (vqtool/lora/recovery.py)
        from vqtool.lora.recovery import make_builders, render_recovery, write_recovery

        builders, hook = make_builders(recovery_rank, targets, fmt=recovery_format, imatrix=imatrix, overwrite=overwrite)
    run = quantize_model(src, targets, component=component, overrides=list(overrides), imatrix=imatrix,
                         overwrite=overwrite, device=device, threads=threads, hash_sources=not no_hash,
                         progress=not as_json, on_tensor=hook)
    if builders:
        recovery = write_recovery(run, builders, fmt=recovery_format, overwrite=overwrite)
    if as_json:
        click.echo(json.dumps({**run.to_dict(), **({"recovery": recovery} if recovery else {})}, indent=2))
        return
    from vqtool.inspect import human_bytes

    click.echo(f"read {human_bytes(run.source_bytes)} in {run.seconds:.1f} s ({run.source_bytes / 1e6 / max(run.seconds, 1e-9):.1f} MB/s)")
    for o in run.outputs:
        fb = f", {len(o.plan.fallbacks)} fallbacks" if o.plan.fallbacks else ""
        click.echo(f"  {o.policy:<10} {human_bytes(o.bytes_written):>10}  {o.plan.bits_per_weight:6.3f} bpw{fb}  {o.path}")
        for d in o.plan.fallbacks:
            click.echo(f"    fallback {d.name}: {' -> '.join([*d.fallback, d.type])}")
    for r in recovery or []:
        click.echo(f"  recovery LoRA rank {r['rank']}: {r['layers']} layers, {human_bytes(r['bytes'])}  {r['path']}")
        click.echo("\n".join(render_recovery(r["by_role"])))
