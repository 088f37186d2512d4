"""Generate the man pages (`man/`) and shell completion scripts (`completions/`) from the command
tree that `--help` shows, so that neither can drift from it:

    python -m jobctl.cli.gendocs            # rewrite man/ and completions/ in the checkout
    python -m jobctl.cli.gendocs --check    # exit 1, naming the stale files, if they differ
    python -m jobctl.cli.gendocs --out DIR  # write into DIR instead

A small generator of our own rather than click-man: click-man writes NAME, SYNOPSIS, DESCRIPTION
and OPTIONS only (no EXIT STATUS, ENVIRONMENT, FILES, EXAMPLES or SEE ALSO), stamps each page
with today's date (every run would make the checked-in pages stale) and runs as a setuptools
command. Pages are plain man(7) macros, with the option lines Click itself prints for `--help`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from jobctl import __version__
from jobctl.cli import complete
from jobctl.record import record

ROOT = Path(__file__).resolve().parents[2]

COMPLETION_FILES = {"bash": "jobctl.bash", "zsh": "_jobctl", "fish": "jobctl.fish"}

# Settings every command reads (its own options' variables are listed beside these).
GLOBAL_ENVIRONMENT = [
    ("JOBCTL_DATABASE_URL", "The database, as --database-url (postgresql://user@host/db or "
                            "sqlite:///path). A password in it is never printed."),
    ("JOBCTL_PROFILE", "The config file profile to use, as --profile."),
    ("JOBCTL_DEBUG", "Show tracebacks for errors, as --debug."),
    ("JOBCTL_NO_COLOR, NO_COLOR", "No colours in tables, as --no-color."),
    ("JOBCTL_COMPLETE_TIMEOUT", "Seconds from its start within which shell completion answers, "
                                "with or without values from the database (default 0.8)."),
    ("XDG_CONFIG_HOME", "Where the config file is (default ~/.config)."),
    ("XDG_DATA_HOME", "Where the default SQLite database is (default ~/.local/share)."),
]

FILES = [
    ("$XDG_CONFIG_HOME/jobctl/config.toml",
     "Settings (database_url, no_color), at the top level and in [profiles.NAME] tables; see "
     "jobctl config show."),
    ("$XDG_DATA_HOME/jobctl/jobctl.db",
     "The SQLite database used when none is configured; created and migrated on first use."),
]

EXIT_STATUS = [
    ("0", "Success."),
    ("1", "A failure with no code of its own."),
    ("2", "Invalid usage or input; nothing was changed."),
    ("3", "An id or name that does not exist."),
    ("4", "The database is unreachable, or its schema is out of date (run jobctl db upgrade)."),
    ("5", "Permission denied: the database refused this role the action; nothing was changed."),
    ("124", "A wait timed out."),
    ("130", "Interrupted (Ctrl-C)."),
]
JOB_EXIT_NOTE = ("job submit --wait, --follow and job wait exit with the job's own exit code "
                 "(128+N when killed by signal N, 125 when it could not be started).")

# Examples for commands whose help has none of its own (an indented block after \b is one).
EXAMPLES: dict[str, list[str]] = {
    "jobctl": ["jobctl job submit -- echo hello", "jobctl worker start --burst",
               "jobctl job list -o json", "jobctl --profile prod worker list"],
    "jobctl job list": ["jobctl job list --state failed --queue gpu",
                        "jobctl job list -o ids --name 'nightly-*' | xargs jobctl job retry"],
    "jobctl job status": ["jobctl job status 42", "jobctl job status 42 -o json | jq .attempts"],
    "jobctl job logs": ["jobctl job logs 42 --follow", "jobctl job logs 42 --attempt 1 "
                                                       "--stream stderr"],
    "jobctl job cancel": ["jobctl job cancel 42 43", "jobctl job list -o ids --state queued | "
                                                     "xargs jobctl job cancel"],
    "jobctl job retry": ["jobctl job retry 42 --retries 2"],
    "jobctl job wait": ["jobctl job wait 42 43 --timeout 1h"],
    "jobctl worker start": ["jobctl worker start --queue default,gpu --concurrency 8",
                            "jobctl worker start --burst --quiet"],
    "jobctl worker list": ["jobctl worker list --all", "jobctl worker list -o json"],
    "jobctl worker stop": ["jobctl worker stop build-01.4242"],
    "jobctl db upgrade": ["JOBCTL_DATABASE_URL=postgresql://jobctl@db/jobctl jobctl db upgrade"],
    "jobctl db status": ["jobctl db status -o json"],
    "jobctl audit": ["jobctl audit --since 1d",
                     "jobctl audit --since 2026-12-01 -o json | jq '.[] | select(.kind == "
                     "\"job\")'"],
    "jobctl config show": ["jobctl --profile prod config show",
                           "jobctl config show -o json"],
    "jobctl config path": ["$EDITOR \"$(jobctl config path)\""],
}


@record
class Page:
    ctx: click.Context
    command: click.Command

    @property
    def path(self) -> str:
        return self.ctx.command_path

    @property
    def name(self) -> str:
        return self.path.replace(" ", "-")

    @property
    def file_name(self) -> str:
        return f"{self.name}.1"


def root_command() -> click.Command:
    from jobctl.cli.app import root_group

    return root_group()


def pages(command: click.Command, parent: click.Context | None = None) -> Iterator[Page]:
    """A page for the root, every group and every command, depth first, in help order."""
    ctx = click.Context(command, info_name=command.name if parent else complete.PROG_NAME,
                        parent=parent, **command.context_settings)
    yield Page(ctx, command)
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from pages(sub, ctx)


# --- roff ---------------------------------------------------------------------------------------


def escape(text: str) -> str:
    """Text safe inside a roff line: backslashes, minus signs, a leading dot or quote, and any
    character beyond ASCII as a groff escape (groff reads its input as Latin-1)."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = "".join(char if ord(char) < 128 else f"\\[u{ord(char):04X}]" for char in text)
    return "\\&" + text if text.startswith((".", "'")) else text


def _paragraphs(help_text: str) -> Iterator[tuple[bool, list[str]]]:
    """(literal, lines) blocks of a Click help text: a paragraph after a \\b line is kept as it
    is written (Click's own convention), any other is text to fill."""
    import inspect

    blocks = inspect.cleandoc(help_text).split("\n\n")
    for block in blocks:
        lines = block.splitlines()
        if lines and lines[0].strip() == "\b":
            yield True, lines[1:]
        elif block.strip():
            yield False, [line.strip() for line in lines]


def _description(help_text: str) -> tuple[list[str], list[str]]:
    """The description's roff lines, and the literal blocks (examples) taken out of it."""
    out: list[str] = []
    examples: list[str] = []
    for literal, lines in _paragraphs(help_text):
        if literal:
            examples.extend(line.strip() for line in lines if line.strip())
            continue
        text = " ".join(lines)
        if text.rstrip().endswith(("Examples:", "Example:")):
            text = text.rstrip().rsplit(" ", 1)[0] if " " in text.strip() else ""
            text = text.rstrip(" .")
            if not text:
                continue
            text += "."
        out += [".PP", escape(text)]
    return out, examples


def render(page: Page) -> str:
    ctx, command = page.ctx, page.command
    help_text = command.help or ""
    short = command.get_short_help_str(limit=200).rstrip(".")
    description, examples = _description(help_text)
    lines = [
        f'.TH "{page.name.upper()}" "1" "" "jobctl {__version__}" "jobctl manual"',
        ".ad l",  # ragged right, no hyphenation: option names must read as typed
        ".nh",
        ".SH NAME",
        f"{escape(page.name)} \\- {escape(short[:1].lower() + short[1:])}",
        ".SH SYNOPSIS",
        f".B {escape(page.path)}",
        escape(" ".join(command.collect_usage_pieces(ctx))),
        ".SH DESCRIPTION",
        *description,
    ]
    lines += _options(ctx, command)
    if isinstance(command, click.Group):
        lines += _commands(ctx, command)
    lines += [".SH EXIT STATUS"]
    for code, meaning in EXIT_STATUS:
        lines += [".TP", f".B {code}", escape(meaning)]
    if page.path in ("jobctl", "jobctl job", "jobctl job submit", "jobctl job wait"):
        lines += [".PP", escape(JOB_EXIT_NOTE)]
    lines += [".SH ENVIRONMENT"]
    for name, meaning in _environment(ctx, command):
        lines += [".TP", f".B {escape(name)}", escape(meaning)]
    lines += [".SH FILES"]
    for name, meaning in FILES:
        lines += [".TP", f".I {escape(name)}", escape(meaning)]
    lines += [".SH EXAMPLES"]
    for example in examples or EXAMPLES.get(page.path) or [f"{page.path} --help"]:
        lines += [".PP", ".RS 4", ".nf", escape(example), ".fi", ".RE"]
    lines += [".SH SEE ALSO", escape(", ".join(f"{name}(1)" for name in _see_also(page)))]
    return "\n".join(lines) + "\n"


def _options(ctx: click.Context, command: click.Command) -> list[str]:
    lines: list[str] = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        usage, help_text = record
        if not lines:
            lines.append(".SH OPTIONS")
        lines += [".TP", f".B {escape(usage)}"]
        if help_text:
            lines.append(escape(help_text))
    return lines


def _commands(ctx: click.Context, group: click.Group) -> list[str]:
    lines = [".SH COMMANDS"]
    for name in group.list_commands(ctx):
        sub = group.get_command(ctx, name)
        if sub is None or sub.hidden:
            continue
        see = f"{ctx.command_path} {name}".replace(" ", "-")
        lines += [".TP", f".B {escape(name)}",
                  escape(f"{sub.get_short_help_str(limit=200)} See {see}(1).")]
    return lines


def _environment(ctx: click.Context, command: click.Command) -> list[tuple[str, str]]:
    own: list[tuple[str, str]] = []
    global_names = {name.split(",")[0] for name, _ in GLOBAL_ENVIRONMENT}
    for param in command.get_params(ctx):
        envvar = getattr(param, "envvar", None)
        names = [envvar] if isinstance(envvar, str) else list(envvar or [])
        for name in names:
            if name not in global_names and isinstance(param, click.Option):
                own.append((name, f"Sets {max(param.opts, key=len)}."))
    return own + GLOBAL_ENVIRONMENT


def _see_also(page: Page) -> list[str]:
    names: list[str] = []
    parent = page.ctx.parent
    if parent is not None:
        names.append(parent.command_path.replace(" ", "-"))
        group = parent.command
        if isinstance(group, click.Group):
            names += [f"{parent.command_path}-{name}".replace(" ", "-")
                      for name in group.list_commands(parent) if name != page.command.name]
    if "jobctl" not in names and page.path != "jobctl":
        names.insert(0, "jobctl")
    return names


# --- files --------------------------------------------------------------------------------------


def generate() -> dict[str, str]:
    """Every generated file's path (relative to the checkout) and content."""
    command = root_command()
    files = {f"man/{page.file_name}": render(page) for page in pages(command)}
    for shell, name in COMPLETION_FILES.items():
        files[f"completions/{name}"] = complete.script(shell, command)
    return files


def stale(out: Path) -> list[str]:
    """Generated files that differ from, or are missing in, `out`; and files there that would no
    longer be generated."""
    files = generate()
    differ = [path for path, text in files.items()
              if not (out / path).is_file() or (out / path).read_text() != text]
    present = [str(path.relative_to(out)) for folder in ("man", "completions")
               for path in sorted((out / folder).glob("*"))]
    extra = [path for path in present if path not in files]
    return differ + extra


def write(out: Path) -> list[str]:
    files = generate()
    for folder in ("man", "completions"):
        (out / folder).mkdir(parents=True, exist_ok=True)
        for old in (out / folder).iterdir():
            if f"{folder}/{old.name}" not in files:
                old.unlink()
    for path, text in files.items():
        (out / path).write_text(text)
    return sorted(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobctl.cli.gendocs",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true",
                        help="only compare with the files there; exit 1 when any is stale")
    parser.add_argument("--out", type=Path, default=ROOT,
                        help="the folder that holds man/ and completions/ (default: the checkout)")
    args = parser.parse_args(argv)
    if args.check:
        differ = stale(args.out)
        for path in differ:
            print(f"stale: {path}", file=sys.stderr)
        if differ:
            print("run: python -m jobctl.cli.gendocs", file=sys.stderr)
        return 1 if differ else 0
    written = write(args.out)
    print(f"wrote {len(written)} files under {args.out}/man and {args.out}/completions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
