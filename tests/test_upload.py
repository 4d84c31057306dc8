"""`vqtool upload` end to end against a local Hub stand-in (tests/hub_stub.py): the files that arrive are
byte-equal to the ones on disk, weights go through LFS, the card is the README, the token authenticates
but never shows in output or logs, and refusals happen before any network call.
"""

from __future__ import annotations

import json
import logging
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from hub_stub import HubStub  # noqa: E402

from vqtool.testing import wan  # noqa: E402

TOKEN = "hf_vqtoolTESTtoken0123456789"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A publish folder: two GGUF variants, a validation report next to them, and a stray file."""
    from vqtool.quant.run import quantize_model

    root = tmp_path_factory.mktemp("upload")
    src = wan.write_transformer(wan.build_transformer("t2v", seed=7), root, "diffusers")
    out = root / "pub"
    quantize_model(str(src), [("q8_0", str(out / "w-q8_0.gguf")), ("q4_k_m", str(out / "w-q4_k_m.gguf"))],
                   progress=False)
    (out / "validation").mkdir()
    (out / "validation" / "report.json").write_text(json.dumps({
        "report_version": 1, "settings": {"frames": 9},
        "candidates": [{"name": "q8", "weights": {"path": str(out / "w-q8_0.gguf")},
                        "summary": {"psnr_mean": 38.25, "ssim_mean": 0.97, "videos": 1}}]}))
    (out / "validation" / "report.html").write_text("<html></html>")
    (out / "scratch.txt").write_text("not for publishing")
    return out


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants as constants

    # Xet storage needs its own server; the stub speaks the git-LFS protocol huggingface_hub falls back to.
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with HubStub(lifetime=60) as stub:
        yield stub


ARGS = ["--base-model", "me/tiny-base", "--license", "apache-2.0"]


def _run(args):
    from click.testing import CliRunner

    from vqtool.cli import cli

    return CliRunner().invoke(cli, args)


def test_upload_sends_every_file_byte_equal_with_the_card(folder, hub, caplog):
    caplog.set_level(logging.DEBUG)
    res = _run(["-vv", "upload", str(folder), "--repo-id", "me/tiny-wan", "--endpoint", hub.url, "--private", *ARGS])
    assert res.exit_code == 0, res.output
    repo = hub.repos["me/tiny-wan"]
    expected = {"w-q8_0.gguf", "w-q4_k_m.gguf", "validation/report.json", "validation/report.html", "README.md"}
    assert set(repo) == expected
    for name in expected - {"README.md"}:
        assert repo[name] == (folder / name).read_bytes(), name
    assert hub.commits[0]["lfs"] == ["w-q4_k_m.gguf", "w-q8_0.gguf"]  # weights by LFS, text as regular files
    card = repo["README.md"].decode()
    assert "| `w-q8_0.gguf` | GGUF | q8_0 |" in card and "38.25 dB" in card and "license: apache-2.0" in card
    assert hub.private["me/tiny-wan"] is True
    # The token authenticates every Hub API call...
    api_calls = [r for r in hub.requests if r.path.startswith("/api/") or ".git/" in r.path]
    assert api_calls and all(r.authorization == f"Bearer {TOKEN}" for r in api_calls)
    # ...and appears nowhere vqtool writes: output, errors, logs.
    assert TOKEN not in res.output and TOKEN not in caplog.text
    assert "uploaded 5 files to" in res.output


def test_second_upload_to_an_existing_repo_commits_again(folder, hub):
    for _ in range(2):
        res = _run(["upload", str(folder), "--repo-id", "me/again", "--endpoint", hub.url, "--json", *ARGS])
        assert res.exit_code == 0, res.output
    assert len(hub.commits) == 2
    assert json.loads(res.stdout)["commit_url"].startswith(f"{hub.url}/me/again/commit/")


def test_dry_run_shows_card_and_files_without_network(folder, hub):
    res = _run(["upload", str(folder), "--repo-id", "me/dry", "--endpoint", hub.url, "--dry-run"])
    assert res.exit_code == 0, res.output
    assert hub.requests == []
    assert "--- README.md (generated) ---" in res.output and "would upload to me/dry: 5 files" in res.output
    assert "scratch.txt: not a GGUF file" in res.output
    assert "warning: wan/t2v-custom is not a released model" in res.output
    res = _run(["upload", str(folder), "--repo-id", "me/dry", "--dry-run", "--json", *ARGS])
    plan = json.loads(res.stdout)
    assert [f["path_in_repo"] for f in plan["files"]][-1] == "README.md" and plan["warnings"] == []
    assert {s["path"] for s in plan["skipped"]} == {"scratch.txt"}


def test_include_adds_files_and_card_replaces_the_generated_one(folder, hub, tmp_path):
    mine = tmp_path / "MY.md"
    mine.write_text("---\nlicense: mit\n---\n# mine\n")
    res = _run(["upload", str(folder), "--repo-id", "me/inc", "--endpoint", hub.url, "--include", "*.txt",
                "--card", str(mine)])
    assert res.exit_code == 0, res.output
    assert hub.repos["me/inc"]["scratch.txt"] == b"not for publishing"
    assert hub.repos["me/inc"]["README.md"] == mine.read_bytes()


def test_card_without_base_model_or_license_is_refused_before_any_network(folder, hub):
    res = _run(["upload", str(folder), "--repo-id", "me/nolicense", "--endpoint", hub.url])
    assert res.exit_code == 1
    assert "--base-model" in str(res.exception) and "--license" in str(res.exception)
    assert hub.requests == []


def test_missing_token_is_refused_before_any_network(folder, hub, monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))
    res = _run(["upload", str(folder), "--repo-id", "me/x", "--endpoint", hub.url, *ARGS])
    assert res.exit_code == 1 and "HF_TOKEN" in str(res.exception) and "hf auth login" in str(res.exception)
    assert hub.requests == []


def test_hub_refusal_is_one_line_with_a_hint_and_no_token(folder, hub):
    from vqtool.publish.upload import UploadError

    hub.fail_commit_with = 403
    res = _run(["upload", str(folder), "--repo-id", "me/forbidden", "--endpoint", hub.url, *ARGS])
    assert isinstance(res.exception, UploadError)
    message = str(res.exception)
    assert "write access" in message and TOKEN not in message and "\n" not in message


@pytest.mark.parametrize("repo_id", ["noslash", "a/b/c", "a/", "me/has space"])
def test_repo_id_must_be_org_slash_name(folder, repo_id):
    res = _run(["upload", str(folder), "--repo-id", repo_id, "--dry-run"])
    assert res.exit_code == 1 and "ORG/NAME" in str(res.exception)


def test_batch_script_uploads_several_folders(folder, hub, tmp_path):
    import subprocess

    script = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "upload_batch.py")
    manifest = tmp_path / "batch.toml"
    manifest.write_text(f'endpoint = "{hub.url}"\nbase_model = "me/tiny-base"\nlicense = "apache-2.0"\n\n'
                        f'[[repo]]\nfolder = "{folder}"\nrepo_id = "me/one"\n\n'
                        f'[[repo]]\nfolder = "{folder}"\nrepo_id = "me/two"\nprivate = true\n')
    env = dict(os.environ, HF_TOKEN=TOKEN, HF_HUB_DISABLE_XET="1")
    proc = subprocess.run([sys.executable, script, str(manifest)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert set(hub.repos) == {"me/one", "me/two"} and hub.private["me/two"] is True
    assert TOKEN not in proc.stdout + proc.stderr
    assert "me/one" in proc.stdout and "me/two" in proc.stdout
