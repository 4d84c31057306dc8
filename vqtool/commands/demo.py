"""``vqtool demo``: quantize the bundled tiny Wan model and validate it against full precision."""

from __future__ import annotations

import json

import click

EPILOG = """\b
Examples:
  vqtool demo                                  # into ./vqtool-demo
  vqtool demo -o /tmp/demo --overwrite         # rerun into the same folder
  vqtool demo --json                           # summaries and timings as JSON
"""


@click.command("demo", epilog=EPILOG)
@click.option("-o", "--output", "out", default="vqtool-demo", show_default=True, help="Output folder.")
@click.option("--overwrite", is_flag=True, help="Replace the files of an earlier demo in that folder.")
@click.option("--no-html", is_flag=True, help="Write report.json only.")
@click.option("--json", "as_json", is_flag=True, help="Print the summaries and timings as JSON.")
def command(out, overwrite, no_html, as_json):
    """Build the bundled tiny Wan2.1 T2V pipeline (offline, seeded), quantize
    its transformer with mixed-q4 and q8_0, generate videos with full
    precision and with each GGUF from the same noise and prompts, and print
    PSNR, SSIM, flicker and weight error per policy, with where the HTML
    report is. Takes well under a minute on a laptop CPU."""
    from vqtool.validate.demo import run_demo
    from vqtool.validate.report import render_summary

    report = run_demo(out, overwrite=overwrite, html=not no_html, progress=not as_json)
    demo = report["demo"]
    if as_json:
        click.echo(json.dumps({"demo": demo, "candidates": {c["name"]: c["summary"] for c in report["candidates"]}},
                              indent=2))
        return
    s = report["settings"]
    click.echo(f"tiny Wan2.1 T2V, {len(s['prompts'])} prompts x {len(s['seeds'])} seed, {s['frames']} frames "
               f"{s['width']}x{s['height']}, {s['steps']} steps; full precision vs each GGUF:")
    click.echo(render_summary(report))
    where = demo["report_html"] or demo["report_json"]
    click.echo(f"done in {demo['seconds']:.1f} s (quantize {demo['quantize_seconds']:.1f} s, "
               f"validate {demo['validate_seconds']:.1f} s); report: {where}")
