"""``vqtool upload``: a folder of variants, LoRAs and reports to a Hub repo, with a generated card.

Planning reads headers only and touches no network (``--dry-run`` prints the plan). Uploading
creates the repo if needed and sends every file plus the card (README.md) in one commit through
``huggingface_hub`` (large files go by Xet or LFS as the Hub asks). The token is whatever
huggingface_hub finds (``HF_TOKEN``, the token file of ``hf auth login``); vqtool never takes it
on the command line and never logs or prints it.

Example::

    from vqtool.publish.upload import plan_upload, upload
    plan = plan_upload("out/", "me/wan2.1-t2v-14b-gguf")
    print(render_plan(plan))
    result = upload(plan)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from vqtool.errors import InputError, VqtoolError
from vqtool.publish.card import CardInfo, origin, render_card, require_complete
from vqtool.publish.variants import CARD as CARD_NAME
from vqtool.publish.variants import Scan, scan_folder

log = logging.getLogger(__name__)


class UploadError(VqtoolError):
    """The Hub refused or failed an upload step."""


@dataclass
class UploadPlan:
    """Everything an upload sends, known before any network call."""

    repo_id: str
    folder: str
    scan: Scan
    card: str  # README.md text
    files: list[tuple[str, str, int]] = field(default_factory=list)  # (path in repo, local path, bytes)
    warnings: list[str] = field(default_factory=list)
    card_source: str = "generated"
    info: CardInfo = field(default_factory=CardInfo)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, _, size in self.files) + len(self.card.encode())

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id, "folder": self.folder, "card": self.card_source,
            "files": [{"path_in_repo": p, "bytes": n} for p, _, n in self.files] + [
                {"path_in_repo": CARD_NAME, "bytes": len(self.card.encode())}],
            "variants": [{"name": v.name, "kind": v.kind, "policy": v.policy, "bytes": v.bytes,
                          "bits_per_weight": v.bits_per_weight} for v in self.scan.variants],
            "skipped": [{"path": p, "reason": r} for p, r in self.scan.skipped],
            "warnings": self.warnings, "total_bytes": self.total_bytes,
        }


@dataclass
class UploadResult:
    repo_id: str
    repo_url: str
    commit_url: str
    commit_oid: str
    files: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_repo_id(repo_id: str) -> None:
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(parts) or any(c.isspace() for c in repo_id):
        raise InputError(f"--repo-id {repo_id!r}: write ORG/NAME (a user or organisation, then the repo name)")


def plan_upload(folder: str | os.PathLike, repo_id: str, *, info: CardInfo | None = None,
                include: tuple[str, ...] = (), card: str | None = None) -> UploadPlan:
    """What uploading ``folder`` to ``repo_id`` sends: files, the card (``card``: your own README) and warnings."""
    check_repo_id(repo_id)
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise InputError("not a folder; pass the folder that holds the files to publish", path=folder)
    scan = scan_folder(folder, include=tuple(include), card=card)
    if not scan.variants:
        raise InputError("no GGUF file, torchao folder or LoRA here; nothing to publish", path=folder)
    info = info or CardInfo()
    info.repo_id = repo_id
    if card is not None:
        try:
            with open(card, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise InputError(f"cannot read the card: {exc.strerror}", path=card) from None
        source = card
    else:
        text, source = render_card(scan, info), "generated"
    plan = UploadPlan(repo_id, folder, scan, text, card_source=source, info=info)
    plan.files = [(rel, os.path.join(folder, rel), os.path.getsize(os.path.join(folder, rel)))
                  for rel in scan.upload_files()]
    plan.warnings = origin(scan, info).warnings if card is None else []
    return plan


def render_plan(plan: UploadPlan) -> str:
    """The dry-run view: the card, then every file with its size, then what is left out."""
    from vqtool.inspect import human_bytes

    width = max(len(p) for p, _, _ in plan.files + [(CARD_NAME, "", 0)])
    lines = [f"--- {CARD_NAME} ({plan.card_source}) ---", plan.card.rstrip(), "--- end of card ---", "",
             f"would upload to {plan.repo_id}: {len(plan.files) + 1} files, {human_bytes(plan.total_bytes)}"]
    lines += [f"  {p:<{width}}  {human_bytes(n):>10}" for p, _, n in plan.files]
    lines.append(f"  {CARD_NAME:<{width}}  {human_bytes(len(plan.card.encode())):>10}")
    if plan.scan.skipped:
        lines += ["not uploaded:"] + [f"  {p}: {why}" for p, why in plan.scan.skipped]
    lines += [f"warning: {w}" for w in plan.warnings]
    return "\n".join(lines)


def _hub_error(exc: Exception, step: str, repo_id: str) -> UploadError:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    hint = {401: "the token is missing or invalid: set HF_TOKEN or run `hf auth login`",
            403: f"the token may not write to {repo_id}: use a token with write access to that namespace",
            404: f"{repo_id} was not found at this endpoint"}.get(status or 0, "")
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return UploadError(f"{step} failed ({text})" + (f"; {hint}" if hint else ""))


def upload(plan: UploadPlan, *, endpoint: str | None = None, private: bool | None = None,
           revision: str | None = None, commit_message: str | None = None, token: str | None = None,
           allow_incomplete_card: bool = False, progress: bool = True) -> UploadResult:
    """Create ``plan.repo_id`` if needed and commit every planned file and the card in one commit.

    ``token`` defaults to the one huggingface_hub finds; it is never logged. ``endpoint`` points
    at another Hub (e.g. a local one in tests). The card must name a base model and license
    unless ``allow_incomplete_card``. ``progress=False`` hides huggingface_hub's progress bars.
    """
    from huggingface_hub import CommitOperationAdd, HfApi, get_token
    from huggingface_hub import utils as hf_utils
    from huggingface_hub.errors import HfHubHTTPError

    if plan.card_source == "generated" and not allow_incomplete_card:
        require_complete(origin(plan.scan, plan.info))
    if token is None and get_token() is None:
        raise UploadError("no Hub token found: set HF_TOKEN or run `hf auth login` (vqtool never takes it as an option)")
    api = HfApi(endpoint=endpoint, token=token)
    log.info("uploading %d files to %s at %s", len(plan.files) + 1, plan.repo_id, api.endpoint)
    try:
        repo_url = api.create_repo(plan.repo_id, private=private, exist_ok=True, repo_type="model")
    except HfHubHTTPError as exc:
        raise _hub_error(exc, "creating the repo", plan.repo_id) from None
    ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=local) for p, local, _ in plan.files]
    ops.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=plan.card.encode("utf-8")))
    message = commit_message or f"Upload {len(plan.scan.variants)} variant(s) with vqtool"
    bars_were_off = hf_utils.are_progress_bars_disabled()
    if not progress:
        hf_utils.disable_progress_bars()
    try:
        info = api.create_commit(plan.repo_id, operations=ops, commit_message=message, revision=revision,
                                 repo_type="model")
    except HfHubHTTPError as exc:
        raise _hub_error(exc, "the commit", plan.repo_id) from None
    except (ValueError, RuntimeError) as exc:  # huggingface_hub's malformed-response and LFS upload errors
        raise UploadError(f"uploading to {plan.repo_id} failed: {exc}") from None
    finally:
        if not progress and not bars_were_off:
            hf_utils.enable_progress_bars()
    return UploadResult(plan.repo_id, str(repo_url), info.commit_url, info.oid,
                        [p for p, _, _ in plan.files] + [CARD_NAME])

