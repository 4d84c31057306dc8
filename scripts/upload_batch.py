#!/usr/bin/env python
"""Upload several publish folders to the Hub in one go, from a TOML manifest.

Each ``[[repo]]`` is one ``vqtool upload`` (same planning, card and checks); top-level keys are
defaults for every repo. The token comes from huggingface_hub (``HF_TOKEN`` or ``hf auth login``)
and is never printed. A failed repo does not stop the others; the exit code is 1 if any failed.

Manifest::

    endpoint = "https://huggingface.co"      # optional
    license = "apache-2.0"                    # defaults for every [[repo]] (optional)

    [[repo]]
    folder = "out/wan-1.3b"
    repo_id = "me/Wan2.1-T2V-1.3B-GGUF"

    [[repo]]
    folder = "out/cogvideox-5b"
    repo_id = "me/CogVideoX-5b-GGUF"
    private = true
    include = ["workflows/*.json"]

Usage: ``python scripts/upload_batch.py batch.toml [--dry-run]``
"""

from __future__ import annotations

import argparse
import sys
import tomllib

KEYS = {"folder", "repo_id", "base_model", "license", "title", "include", "card", "private", "revision", "message",
        "endpoint"}


def entries(manifest: dict) -> list[dict]:
    """Every [[repo]] merged over the top-level defaults; unknown keys are errors."""
    defaults = {k: v for k, v in manifest.items() if k != "repo"}
    out = []
    for i, repo in enumerate(manifest.get("repo", []), 1):
        merged = {**defaults, **repo}
        unknown = set(merged) - KEYS
        if unknown:
            raise SystemExit(f"repo {i}: unknown keys {sorted(unknown)}; allowed: {sorted(KEYS)}")
        if "folder" not in merged or "repo_id" not in merged:
            raise SystemExit(f"repo {i}: needs folder and repo_id")
        out.append(merged)
    if not out:
        raise SystemExit("the manifest has no [[repo]] entries")
    return out


def main(argv: list[str] | None = None) -> int:
    from vqtool.errors import VqtoolError
    from vqtool.publish.card import CardInfo
    from vqtool.publish.upload import plan_upload, render_plan, upload

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest")
    parser.add_argument("--dry-run", action="store_true", help="print each card and file list; no network")
    args = parser.parse_args(argv)
    with open(args.manifest, "rb") as f:
        repos = entries(tomllib.load(f))
    failed = 0
    for e in repos:
        try:
            info = CardInfo(repo_id=e["repo_id"], title=e.get("title"), base_model=e.get("base_model"),
                            license=e.get("license"))
            plan = plan_upload(e["folder"], e["repo_id"], info=info, include=tuple(e.get("include", ())),
                               card=e.get("card"))
            if args.dry_run:
                print(render_plan(plan))
                continue
            result = upload(plan, endpoint=e.get("endpoint"), private=e.get("private"), revision=e.get("revision"),
                            commit_message=e.get("message"))
            print(f"{e['repo_id']}: {len(result.files)} files, {result.commit_url}")
        except VqtoolError as exc:
            failed += 1
            print(f"{e['repo_id']}: failed: {exc}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
