"""The README's two set-up commands stay true: CI runs the test command verbatim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set-up", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", setup, re.S)]


def test_readme_has_exactly_two_setup_commands():
    commands = _readme_commands()
    assert len(commands) == 2
    main_job, tests = commands
    assert "pip install" in main_job and "vqtool " in main_job.split("&&")[-1]
    assert "pytest" in tests


def test_ci_runs_the_readme_test_command_verbatim():
    test_command = _readme_commands()[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()
    assert "torch==2.13.0" in test_command.split("&&")[1]


def test_mappings_data_package_is_found_through_resources():
    from vqtool.resources import mappings_dir

    assert mappings_dir().joinpath("__init__.py").is_file()


def test_readme_main_job_runs_end_to_end(tmp_path):
    """The vqtool part of the main-job command, run as written (with this interpreter's vqtool)."""
    import os
    import shlex
    import subprocess
    import sys

    main_job = _readme_commands()[0]
    steps = [s.strip() for s in main_job.split("&&") if ".venv/bin/vqtool" in s]
    assert steps
    for step in steps:
        argv = shlex.split(step)
        assert argv[0] == ".venv/bin/vqtool"
        res = subprocess.run([sys.executable, "-m", "vqtool", *argv[1:]], cwd=tmp_path, capture_output=True, text=True,
                             env={**os.environ})
        assert res.returncode == 0, res.stderr
    assert "mixed-q4" in res.stdout and "bits/weight" in res.stdout
