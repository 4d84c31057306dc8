"""``vqtool upload``: publish a folder of variants to the Hub with a generated model card."""

from __future__ import annotations

import json

import click

EPILOG = """\b
Examples:
  vqtool upload out/ --repo-id me/Wan2.1-T2V-14B-GGUF --dry-run      # the card and file list, no network
  vqtool upload out/ --repo-id me/Wan2.1-T2V-14B-GGUF
  vqtool upload out/ --repo-id me/tiny-wan --base-model me/tiny-wan --license apache-2.0 --private
  vqtool upload out/ --repo-id me/x --include 'workflows/*.json' --card MY_README.md
\b
Uploads GGUF files, torchao folders, LoRAs and validation report folders (report.json and what is
next to it); anything else is listed as not uploaded unless --include names it. The token comes
from huggingface_hub (HF_TOKEN or `hf auth login`) and is never printed.
"""


@click.command("upload", epilog=EPILOG)
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--repo-id", required=True, help="Target repo, ORG/NAME (created if missing).")
@click.option("--base-model", help="Hub id of the model these files come from (default: found from the files).")
@click.option("--license", "license_", help="Hub license id (default: the base model's, when vqtool knows it).")
@click.option("--title", help="Card title (default: the repo name).")
@click.option("--include", multiple=True, metavar="GLOB", help="Also upload files matching GLOB (relative to FOLDER).")
@click.option("--card", type=click.Path(exists=True, dir_okay=False), help="Use this README instead of the generated card.")
@click.option("--private", is_flag=True, default=None, help="Create the repo private.")
@click.option("--revision", help="Branch to commit to (default: main).")
@click.option("--message", "commit_message", help="Commit message.")
@click.option("--endpoint", help="Hub endpoint (default: huggingface_hub's, HF_ENDPOINT).")
@click.option("--dry-run", is_flag=True, help="Print the card and the file list; no network.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def command(folder, repo_id, base_model, license_, title, include, card, private, revision, commit_message, endpoint,
            dry_run, as_json):
    """Upload the GGUF files, torchao folders, LoRAs and validation reports in
    FOLDER to the Hub repo REPO_ID, with a model card generated from the files'
    metadata and reports (variants, sizes, bits per weight, PSNR/SSIM, what stayed
    in high precision, how to load, source and license)."""
    from vqtool.publish.card import CardInfo
    from vqtool.publish.upload import plan_upload, render_plan, upload

    info = CardInfo(repo_id=repo_id, title=title, base_model=base_model, license=license_)
    plan = plan_upload(folder, repo_id, info=info, include=tuple(include), card=card)
    if dry_run:
        click.echo(json.dumps(plan.to_dict() | {"card_text": plan.card}, indent=2) if as_json else render_plan(plan))
        return
    for w in plan.warnings:
        click.echo(f"warning: {w}", err=True)
    result = upload(plan, endpoint=endpoint, private=private, revision=revision, commit_message=commit_message,
                    progress=not as_json)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(f"uploaded {len(result.files)} files to {result.repo_url}\n  commit {result.commit_url}")
