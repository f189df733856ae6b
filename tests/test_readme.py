"""Every shell command in the README's code blocks either runs here or is listed in SKIP with the reason.

Snakemake commands run from a scratch directory that holds links to the repository's configs, so
that they read as written and write nothing into the checkout; they are dry runs (`-n`) except
`--unlock`, `--lint` and `--report`, which are cheap. `--report` runs on a scratch directory given
the report's files (copied from docs/results/), not on a trained one. No command trains a model.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

README = REPO / "README.md"
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
OTHER_LANGUAGES = {"text", "yaml"}  # fenced blocks that hold no commands

# the parts of README commands (split at `&&`) that cannot run in a test, and why
SKIP = {
    "./setup.sh": "creates .venv from the locks (network, minutes); the tests run inside the .venv it made",
    ".venv/bin/pytest -q": "the whole suite, this test included",
    ".venv/bin/snakemake --cores 8 results/summary.md --software-deployment-method conda":
        "needs conda, which even a dry run calls (`conda info`)",
}
# commands that are cheap enough to run for real (in the scratch directory); other snakemake
# commands are dry runs
REAL_FLAGS = {"--unlock", "--lint", "--report"}
# the two commands the README must keep exactly
THE_TWO_COMMANDS = [
    "./setup.sh && .venv/bin/snakemake --cores 8 results/summary.md",
    "./setup.sh && .venv/bin/pytest -q",
]
# what the report needs to exist, taken from a real run's summary
REPORT_FILES = {
    "results/summary.md": "docs/results/2026-11-27/summary.md",
    "results/summary.csv": "docs/results/2026-11-27/summary.csv",
    "results/plots/dev-f1-vs-latency.png": "docs/results/2026-11-27/plots/dev-f1-vs-latency.png",
    "results/plots/dev-f1-vs-size.png": "docs/results/2026-11-27/plots/dev-f1-vs-size.png",
}


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return [(m.group(1).strip(), m.group(2)) for m in re.finditer(r"^```([^\n]*)\n(.*?)^```", text, re.M | re.S)]


def readme_commands() -> list[str]:
    commands = []
    for language, body in code_blocks(README.read_text()):
        if language not in SHELL_LANGUAGES:
            continue
        for line in body.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append(" ".join(line.split()))
    return commands


def command_parts() -> list[str]:
    return [part.strip() for command in readme_commands() for part in command.split("&&")]


def test_code_blocks_say_their_language():
    """An untagged block could hold commands this test would not see."""
    languages = [language for language, _ in code_blocks(README.read_text())]
    assert languages and set(languages) <= SHELL_LANGUAGES | OTHER_LANGUAGES, languages


def test_the_two_commands_are_there():
    assert set(THE_TWO_COMMANDS) <= set(readme_commands())


def test_every_skip_entry_is_a_readme_command():
    assert set(SKIP) <= set(command_parts()), set(SKIP) - set(command_parts())


@pytest.fixture
def scratch(tmp_path):
    """A working directory that looks like the repository root for the README's commands."""
    for name in ("config.yaml", "configs", "profiles"):
        (tmp_path / name).symlink_to(REPO / name)
    return tmp_path


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600, env=os.environ)


@pytest.mark.parametrize("part", command_parts())
def test_readme_command(part, scratch):
    if part in SKIP:
        pytest.skip(SKIP[part])
    words = shlex.split(part)
    if words[0] == ".venv/bin/snakemake":
        args = words[1:]
        real = bool(REAL_FLAGS & set(args))
        if "--report" in args:
            for target, source in REPORT_FILES.items():
                (scratch / target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(REPO / source, scratch / target)
        argv = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
                *([] if real else ["-n"]), *args]
        result = run(argv, scratch)
        assert result.returncode == 0, f"{part}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        if "--report" in args:
            assert (scratch / args[args.index("--report") + 1]).stat().st_size > 0
        if "--lint" in args:
            assert "Congratulations" in result.stdout + result.stderr, result.stdout[-3000:]
        return
    if words[:2] == [".venv/bin/python", "-m"] and words[2].startswith("workflow_scripts.") and words[3:] == ["--help"]:
        result = run([sys.executable, *words[1:]], REPO)
        assert result.returncode == 0 and "usage:" in result.stdout, result.stderr[-2000:]
        return
    pytest.fail(f"README command neither run by this test nor listed in SKIP: {part}")
