"""Crontab files as Debian's cron reads them: `%` and standard input, system crontabs with their
user field, @reboot entries skipped, and which paths are system crontabs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from crontab_samples import (
    DEBIAN_ETC_CRONTAB,
    DEBIAN_ETC_CRONTAB_ENTRIES,
    DEBIAN_EXAMPLE,
    DEBIAN_VIXIE_EXAMPLE,
)

from jobctl.cron import CrontabError, is_system_crontab, parse_crontab, split_command

# (command field, command, standard input). The first nine are what Debian 12's cron
# (3.0pl1-162) did with them, run for real as /etc/cron.d lines: the command's output, written by
# `cat > out` (or printf), compared byte for byte. The rest follow do_command.c.
PERCENT_CASES = [
    ("cat > out%Joe,%%Where are your kids?%", "cat > out", b"Joe,\n\nWhere are your kids?\n"),
    (r"cat > out%a\%b%c\\d\\%e%", "cat > out", b"a%b\n" + rb"c\\d\%e" + b"\n"),
    (r"printf '\%s|\n' 'a\\b' 'c\qd' 'e\\\%f' > out",
     r"printf '%s|\n' 'a\b' 'c\qd' 'e\%f' > out", None),
    ("cat > out%abc%\\", "cat > out", b"abc\n\\"),
    ("cat > out%  two spaces  ", "cat > out", b"  two spaces  \n"),
    ("cat > out%\\", "cat > out", b"\\"),
    ("cat > out%", "cat > out", None),
    ("cat > out   ", "cat > out   ", None),
    (r"cat > out%x\\%y\qz%%", "cat > out", rb"x\%y\qz" + b"\n\n"),
    # the command: \% is a %, \\ a backslash (Debian's patch handle-escapes-in-commands), so an
    # escaped backslash does not escape the % after it; other backslashes stay
    (r"a\\%b", "a\\", b"b\n"),
    (r"a\\\%b", r"a\%b", None),
    (r"date +\%s\n", r"date +%s\n", None),
    ("trailing\\", "trailing\\", None),
    # the input: UTF-8, one newline added unless it ends with one
    ("mail bob%Grüße%", "mail bob", "Grüße\n".encode()),
    ("cat%no newline", "cat", b"no newline\n"),
]


@pytest.mark.parametrize(("field", "command", "stdin"), PERCENT_CASES)
def test_percent_splits_the_command_from_its_standard_input(field: str, command: str,
                                                            stdin: bytes | None) -> None:
    assert split_command(field) == (command, stdin)


def test_debian_crontab5_example() -> None:
    crontab = parse_crontab(DEBIAN_EXAMPLE)
    assert crontab.skipped == []
    assert [(e.line, e.cron, e.command, e.input) for e in crontab.entries] == [
        (7, "5 0 * * *", "$HOME/bin/daily.job >> $HOME/tmp/out 2>&1", None),
        (9, "15 14 1 * *", "$HOME/bin/monthly", None),
        (11, "0 22 * * 1-5", "mail -s \"It's 10pm\" joe", b"Joe,\n\nWhere are your kids?\n"),
        (12, "23 0-23/2 * * *", 'echo "run 23 minutes after midn, 2am, 4am ..., everyday"',
         None),
        (13, "5 4 * * sun", 'echo "run at 5 after 4 every Sunday"', None),
        (14, "0 */4 1 * mon", 'echo "run every 4th hour on the 1st and on every Monday"', None),
        (15, "0 0 */2 * sun", "echo \"run at midn on every Sunday that's an uneven date\"", None),
        (17, "0 4 8-14 * *", 'test $(date +%u) -eq 6 && echo "2nd Saturday"', None),
    ]
    for entry in crontab.entries:
        assert entry.env == {"SHELL": "/bin/bash", "MAILTO": "paul"}
        assert (entry.user, entry.timezone) == (None, None)


def test_the_older_debian_example_with_a_tab_and_escaped_percents() -> None:
    entries = {e.line: e for e in parse_crontab(DEBIAN_VIXIE_EXAMPLE).entries}
    assert sorted(entries) == [7, 9, 11, 12, 13, 15]
    assert (entries[11].command, entries[11].input) == (
        "mail -s \"It's 10pm\" joe", b"Joe,\n\nWhere are your kids?\n")
    assert (entries[15].command, entries[15].input) == (
        "expr $(date +%s) / 60 / 60 / 24 % 9 > /dev/null || echo Wax the floor.", None)
    assert entries[7].env == {"SHELL": "/bin/sh", "MAILTO": "paul"}


def test_debian_etc_crontab_as_a_system_crontab() -> None:
    crontab = parse_crontab(DEBIAN_ETC_CRONTAB, system=True)
    assert crontab.skipped == []
    assert [(e.line, e.cron, e.command) for e in crontab.entries] == DEBIAN_ETC_CRONTAB_ENTRIES
    for entry in crontab.entries:
        assert (entry.user, entry.input) == ("root", None)
        assert entry.env == {"SHELL": "/bin/sh",
                             "PATH": "/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin"}


def test_system_crontab_aliases_percent_and_users() -> None:
    text = "\n".join([
        "@daily root run-parts --report /etc/cron.daily",
        "@hourly  www-data   php /srv/cron.php%--verbose",
        "*/10 * * * * backup$ /usr/local/bin/push",
        "0 3 * * * john@example.com  ~/bin/nightly",
    ])
    entries = parse_crontab(text, system=True).entries
    assert [(e.cron, e.user, e.command, e.input) for e in entries] == [
        ("0 0 * * *", "root", "run-parts --report /etc/cron.daily", None),
        ("0 * * * *", "www-data", "php /srv/cron.php", b"--verbose\n"),
        ("*/10 * * * *", "backup$", "/usr/local/bin/push", None),
        ("0 3 * * *", "john@example.com", "~/bin/nightly", None),
    ]


def test_reboot_entries_are_skipped_and_the_rest_is_kept() -> None:
    text = "@reboot /usr/bin/start-things\n0 * * * * date\n\n@REBOOT echo again%in\n"
    crontab = parse_crontab(text)
    assert [(e.line, e.command) for e in crontab.entries] == [(2, "date")]
    assert [skip.line for skip in crontab.skipped] == [1, 4]
    assert "@reboot has no fire times" in crontab.skipped[0].reason
    system = parse_crontab("@reboot root /sbin/boot-thing\n@daily root true\n", system=True)
    assert ([e.line for e in system.entries], [s.line for s in system.skipped]) == ([2], [1])


@pytest.mark.parametrize(("text", "line", "message"), [
    ("# cron.d file without users\n0 * * * * /usr/bin/poll", 2,
     "no user field: '/usr/bin/poll' is not a user name"),
    ("5 0 * * * $HOME/bin/daily.job", 1, "no user field: '$HOME/bin/daily.job'"),
    ("0 * * * * SERVICE_MODE=1 /sbin/e2scrub_all", 1, "no user field: 'SERVICE_MODE=1'"),
    ("0 * * * * 0 /bin/true", 1, "no user field: '0' is not a user name"),
    ("0 * * * * root", 1, "no command after the user 'root'"),
    ("0 * * * * root \t", 1, "no command after the user 'root'"),
    ("@daily root", 1, "no command after the user 'root'"),
    ("@daily", 1, "expected a user and a command after @daily"),
    ("0 * * * *", 1, "expected 5 time fields and a user and a command: '0 * * * *'"),
    ("@reboot /bin/start", 1, "no user field: '/bin/start'"),
])
def test_system_crontab_lines_cron_would_not_accept(text: str, line: int, message: str) -> None:
    with pytest.raises(CrontabError, match=re.escape(message)) as raised:
        parse_crontab(text, system=True)
    assert raised.value.line == line


def test_lines_with_crlf_and_leading_blanks() -> None:
    entries = parse_crontab("  SHELL=/bin/sh\r\n\t0 1 * * *\techo hi%there\r\n").entries
    assert [(e.line, e.cron, e.command, e.input, e.env) for e in entries] == [
        (2, "0 1 * * *", "echo hi", b"there\n", {"SHELL": "/bin/sh"})]


def test_which_paths_are_system_crontabs(tmp_path: Path) -> None:
    (tmp_path / "etc" / "cron.d").mkdir(parents=True)
    for name in ("etc/crontab", "etc/cron.d/e2scrub_all", "crontab", "etc/crontab.bak",
                 "my.crontab"):
        (tmp_path / name).write_text("")
    (tmp_path / "linked").symlink_to(tmp_path / "etc" / "cron.d" / "e2scrub_all")
    assert is_system_crontab("/etc/crontab") and is_system_crontab("/etc/cron.d/anacron")
    assert is_system_crontab(str(tmp_path / "etc" / "crontab"))
    assert is_system_crontab(str(tmp_path / "etc" / "cron.d" / "e2scrub_all"))
    assert is_system_crontab(str(tmp_path / "linked"))
    for name in ("crontab", "etc/crontab.bak", "my.crontab", "etc/cron.d"):
        assert not is_system_crontab(str(tmp_path / name)), name
