"""A crontab's `%` input reaches the job: Debian's crontab(5) example imported through the real
executable, its `%` line (with `cat` for `mail`) triggered and run by a burst worker."""

from __future__ import annotations

from crontab_samples import DEBIAN_EXAMPLE
from e2e_support import Jobctl, describe

MAIL = 'mail -s "It\'s 10pm" joe'


def test_a_percent_line_feeds_the_job_its_standard_input(jobctl: Jobctl) -> None:
    """The example's MAILTO=paul becomes a mail hook: a fake sendmail on the worker's PATH
    receives the run that printed (cat's input) and nothing for the silent one."""
    assert MAIL in DEBIAN_EXAMPLE
    bin_dir, mail = jobctl.tmp_path / "bin", jobctl.tmp_path / "mail"
    bin_dir.mkdir()
    sendmail = bin_dir / "sendmail"
    sendmail.write_text(f'#!/bin/sh\n{{ echo "ARGS: $*"; cat; echo "--"; }} >> {mail}\n')
    sendmail.chmod(0o755)
    jobctl.env["PATH"] = f"{bin_dir}:{jobctl.env['PATH']}"
    crontab = jobctl.tmp_path / "paul"
    crontab.write_text(DEBIAN_EXAMPLE.replace(MAIL, "cat")
                       + "@reboot /usr/local/bin/start-agent\n* * * * * cat\n")
    imported = jobctl("schedule", "import", str(crontab))
    assert imported.returncode == 0, describe(imported)
    assert f"{crontab}:18: skipped" in imported.stderr

    with_input = int(jobctl.ok("schedule", "trigger", "paul-11"))
    without = int(jobctl.ok("schedule", "trigger", "paul-19"))
    jobctl.burst()

    for job_id, stdin in ((with_input, b"Joe,\n\nWhere are your kids?\n"), (without, b"")):
        status = jobctl.status(job_id)
        assert (status["state"], status["exit_code"]) == ("succeeded", 0), status
        assert status["argv"] == ["/bin/bash", "-c", "cat"]
        assert status["input_bytes"] == (len(stdin) or None)
        logs = jobctl.run_bytes("job", "logs", str(job_id))
        assert logs.returncode == 0, describe(logs)
        assert logs.stdout == stdin  # cat wrote back what it read
    mailed = mail.read_text()
    assert mailed.count("ARGS: -i -- paul\n") == 1, mailed
    assert mailed.endswith("Joe,\n\nWhere are your kids?\n--\n"), mailed
