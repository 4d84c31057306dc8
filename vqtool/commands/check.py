"""``vqtool check``: gate CI on a validation report (exit 0 when quality holds, 1 with the reason when not)."""

from __future__ import annotations

import json

import click

EPILOG = """\b
Examples:
  vqtool check val/report.json --min-psnr 30 --min-ssim 0.9
  vqtool check val/report.json --baseline last-release/report.json --max-psnr-drop 0.5
  vqtool check val/ --min-psnr 25 --candidate mixed-q4 --stat min     # worst video, one candidate
\b
Exit status: 0 quality holds; 1 a regression (one line says which candidate and metric);
2 the report or options are unusable.
"""


@click.command("check", epilog=EPILOG)
@click.argument("report", type=click.Path())
@click.option("--min-psnr", type=float, help="Fail when a candidate's PSNR (dB) is below this.")
@click.option("--min-ssim", type=float, help="Fail when a candidate's SSIM is below this.")
@click.option("--baseline", type=click.Path(), help="An earlier report.json to compare with (candidates matched by name).")
@click.option("--max-psnr-drop", type=float, help="With --baseline: largest allowed PSNR drop in dB (default 0).")
@click.option("--max-ssim-drop", type=float, help="With --baseline: largest allowed SSIM drop.")
@click.option("--candidate", "candidates", multiple=True, help="Check only this candidate (repeatable).")
@click.option("--stat", type=click.Choice(["mean", "min"]), default="mean", show_default=True,
              help="Compare the mean over videos or the worst video.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def command(report, min_psnr, min_ssim, baseline, max_psnr_drop, max_ssim_drop, candidates, stat, as_json):
    """Check REPORT (a report.json from `vqtool validate`, or its folder)
    against minimum PSNR/SSIM or against a BASELINE report."""
    from vqtool.errors import InputError, QualityRegression
    from vqtool.validate.check import check_report
    from vqtool.validate.report import load_report

    try:
        result = check_report(load_report(report), min_psnr=min_psnr, min_ssim=min_ssim,
                              baseline=load_report(baseline) if baseline else None, max_psnr_drop=max_psnr_drop,
                              max_ssim_drop=max_ssim_drop, candidates=list(candidates), stat=stat)
    except InputError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    if not result.ok:
        raise QualityRegression(result.reason, path=report)
    if not as_json:
        click.echo(f"ok: {result.reason}")
