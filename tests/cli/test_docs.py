"""Man pages and completion scripts: the checked-in ones are what the generator makes from the
command tree today, every option of every command is in its page, and every page renders with
man and groff without a warning."""

from __future__ import annotations

import filecmp
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from jobctl.cli import gendocs
from jobctl.cli.gendocs import ROOT

PAGES = list(gendocs.pages(gendocs.root_command()))
SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "ENVIRONMENT", "FILES",
            "EXAMPLES", "SEE ALSO"]


def test_regenerated_files_equal_the_checked_in_ones(tmp_path: Path) -> None:
    assert gendocs.main(["--out", str(tmp_path)]) == 0
    for folder in ("man", "completions"):
        compared = filecmp.dircmp(ROOT / folder, tmp_path / folder)
        stale = compared.diff_files + compared.left_only + compared.right_only
        assert not stale, (f"stale {folder}/ files {stale}: run python -m jobctl.cli.gendocs "
                           "and commit the result")
        assert compared.same_files, folder


def test_check_mode_names_a_stale_file(tmp_path: Path) -> None:
    gendocs.write(tmp_path)
    assert gendocs.main(["--check", "--out", str(tmp_path)]) == 0
    page = tmp_path / "man" / "jobctl-job-list.1"
    page.write_text(page.read_text().replace("newest first", "oldest first"))
    (tmp_path / "man" / "jobctl-gone.1").write_text(".TH GONE 1\n")
    assert gendocs.stale(tmp_path) == ["man/jobctl-job-list.1", "man/jobctl-gone.1"]
    assert gendocs.main(["--check", "--out", str(tmp_path)]) == 1


def test_a_page_for_every_command_and_group() -> None:
    names = {page.file_name for page in PAGES}
    assert {"jobctl.1", "jobctl-job.1", "jobctl-job-submit.1", "jobctl-worker-start.1",
            "jobctl-config-show.1", "jobctl-completion-bash.1"} <= names
    assert names == {path.name for path in (ROOT / "man").glob("*.1")}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_option_and_section_is_in_the_page(page: gendocs.Page) -> None:
    text = (ROOT / "man" / page.file_name).read_text()
    plain = text.replace("\\-", "-")
    for section in SECTIONS:
        assert f".SH {section}\n" in text, section
    for param in page.command.get_params(page.ctx):
        if isinstance(param, click.Option) and not param.hidden:
            for name in [*param.opts, *param.secondary_opts]:
                assert re.search(rf"^\.B .*{re.escape(name)}\b", plain, re.MULTILINE), name
            envvar = param.envvar if isinstance(param.envvar, str) else None
            if envvar:
                assert envvar in plain, envvar
    if isinstance(page.command, click.Group):
        for name in page.command.list_commands(page.ctx):
            assert f"\n.B {name}\n" in plain, name


def _unformatted(text: str) -> str:
    """man's output without its overstrikes (bold is X<BS>X, underline _<BS>X)."""
    return re.sub(r".\x08", "", text)


def _require(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} is needed to check the man pages (Debian: apt-get install man-db groff)"
    return path


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_page_renders_without_warnings(page: gendocs.Page) -> None:
    path = ROOT / "man" / page.file_name
    groff = subprocess.run([_require("groff"), "-man", "-Tutf8", "-ww", "-z", str(path)],
                           capture_output=True, text=True, timeout=60, check=False)
    assert (groff.returncode, groff.stderr) == (0, ""), groff.stderr
    env = {**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "0", "LC_ALL": "C.UTF-8"}
    man = subprocess.run([_require("man"), "--warnings", "-l", str(path)], env=env,
                         capture_output=True, text=True, timeout=60, check=False)
    assert (man.returncode, man.stderr) == (0, ""), man.stderr
    shown = _unformatted(man.stdout)
    assert page.name in shown
    assert "EXIT STATUS" in shown


def test_the_submit_page_reads_well() -> None:
    env = {**os.environ, "MANWIDTH": "100", "LC_ALL": "C.UTF-8"}
    out = subprocess.run([_require("man"), "-l", str(ROOT / "man" / "jobctl-job-submit.1")],
                         env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    out = _unformatted(out)
    assert "jobctl-job-submit - submit a job: a command for a worker to run" in out
    assert "jobctl job submit [OPTIONS] [--] COMMAND [ARG]..." in out
    assert "-q, --queue TEXT" in out and "JOBCTL_QUEUE" in out
    assert "jobctl job submit --wait -- make test" in out  # an example from its help
    assert "jobctl-job-list(1)" in out
    assert "±25 % jitter" in out  # beyond ASCII, through groff's escapes


def test_man_finds_the_pages_installed_with_jobctl() -> None:
    """`pip install` (editable too) puts the pages under PREFIX/share/man/man1, which man finds
    through PATH's PREFIX/bin. (A stale copy there means: pip install again.)"""
    bin_folder = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("MANPATH", "MANOPT")}
    env["PATH"] = f"{bin_folder}:/usr/local/bin:/usr/bin:/bin"
    result = subprocess.run([_require("man"), "-w", "jobctl-job-submit"], env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"man does not find the page: pip install -e . ({result})"
    installed = Path(result.stdout.strip())
    assert installed == Path(sys.prefix) / "share" / "man" / "man1" / "jobctl-job-submit.1"
    assert installed.read_text() == (ROOT / "man" / "jobctl-job-submit.1").read_text(), (
        f"{installed} is an older copy: pip install -e . again")
