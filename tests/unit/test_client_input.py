"""The Client's checks of its input, without a database: they come before any connection, name
the Python API's fields (never a CLI flag), and the command line words the same errors with its
flags (jobctl.cli.common.CLI_WORDS, the one place that maps them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from jobctl.cli.common import CLI_WORDS, cli_message
from jobctl.client import Client
from jobctl.errors import InvalidInput, NotFound
from jobctl.models import JobSpec, ScheduleDefinition

# A server nobody listens on: a client that tried to connect would raise DatabaseUnavailable.
UNREACHABLE = "postgresql://nobody@127.0.0.1:1/none"
LATER = datetime(2030, 1, 2, tzinfo=UTC)
EARLIER = datetime(2030, 1, 1, tzinfo=UTC)

JOB_CASES: list[tuple[dict[str, Any], str, str, str]] = [
    # (JobSpec changes, field, the Python API's message, the command line's)
    ({"argv": []}, "argv", "no command given: argv is empty",
     "no command given: put it after --, e.g. jobctl job submit -- echo hi"),
    ({"argv": [""]}, "argv", "no command given: argv is empty",
     "no command given: put it after --, e.g. jobctl job submit -- echo hi"),
    ({"retries": -1}, "retries", "retries must be between 0 and 1000000, not -1",
     "--retries must be between 0 and 1000000, not -1"),
    ({"timeout_s": 0.0}, "timeout_s", "timeout_s must be longer than 0s",
     "--timeout must be longer than 0s"),
    ({"queue": ""}, "queue", "queue must not be empty", "--queue must not be empty"),
    ({"priority": 2**31}, "priority",
     "priority must be between -2147483648 and 2147483647, not 2147483648",
     "--priority must be between -2147483648 and 2147483647, not 2147483648"),
    ({"backoff_s": 1e12}, "backoff_s", "backoff_s must be at most 36500d",
     "--retry-backoff must be at most 36500d"),
    ({"run_in_s": 1e12}, "run_in_s", "run_in_s must be at most 36500d",
     "--in must be at most 36500d"),
    # Fields the command line checks under its own flags first keep their names in both.
    ({"max_lost": 0}, "max_lost", "max_lost must be between 1 and 2147483647, not 0",
     "max_lost must be between 1 and 2147483647, not 0"),
    ({"user": "{x} y"}, "user",
     "invalid user '{x} y': a user name cannot start with - or hold blanks, control characters,"
     " : or /",
     "invalid user '{x} y': a user name cannot start with - or hold blanks, control characters,"
     " : or /"),
]


@pytest.mark.parametrize(("changes", "field", "api", "cli"), JOB_CASES,
                         ids=[case[1] + str(i) for i, case in enumerate(JOB_CASES)])
def test_a_bad_job_spec_names_its_field(changes: dict[str, Any], field: str, api: str,
                                        cli: str) -> None:
    spec = JobSpec(**{"argv": ["true"], **changes})
    with pytest.raises(InvalidInput) as caught:
        Client(UNREACHABLE).submit(spec)
    assert (caught.value.field, caught.value.message, cli_message(caught.value)) == (
        field, api, cli)


def test_many_jobs_take_no_unique_key() -> None:
    with pytest.raises(InvalidInput) as caught:
        Client(UNREACHABLE).submit_many([JobSpec(argv=["true"]),
                                         JobSpec(argv=["true"], unique_key="k")])
    assert caught.value.message == "unique_key cannot be used when submitting many jobs"
    assert cli_message(caught.value) == "--unique-key cannot be used when submitting many jobs"


def test_retry_checks_its_retries_and_ids_first() -> None:
    client = Client(UNREACHABLE)
    with pytest.raises(InvalidInput, match=r"^retries must be between 0 and 1000000, not -2$"):
        client.retry(1, retries=-2)
    with pytest.raises(NotFound, match=f"^no job with id {2**63}$"):
        client.retry(2**63)


SCHEDULE_CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"cron": None, "every_s": None}, "give cron or every_s (one of them)",
     "give --cron or --every (one of them)"),
    ({"cron": "@daily", "every_s": 60.0}, "give cron or every_s (one of them)",
     "give --cron or --every (one of them)"),
    ({"every_s": 0.0}, "every_s must be longer than 0s", "--every must be longer than 0s"),
    ({"every_s": 1e12}, "every_s must be at most 36500d", "--every must be at most 36500d"),
    ({"jitter_s": -1.0}, "jitter_s must be 0s or more", "--jitter must be 0s or more"),
    ({"start_at": LATER, "end_at": EARLIER}, "end_at must be after start_at",
     "--end-at must be after --start-at"),
]


@pytest.mark.parametrize(("changes", "api", "cli"), SCHEDULE_CASES)
def test_a_bad_schedule_names_its_fields(changes: dict[str, Any], api: str, cli: str) -> None:
    definition = ScheduleDefinition(**{"name": "s", "job": JobSpec(argv=["true"]),
                                       "every_s": 60.0, **changes})
    with pytest.raises(InvalidInput) as caught:
        Client(UNREACHABLE).add_schedule(definition)
    assert (caught.value.message, cli_message(caught.value)) == (api, cli)


def test_a_template_shows_values_as_they_are() -> None:
    error = InvalidInput(f"schedule {InvalidInput.literal(repr('{a}'))} exists already: give "
                         "{replace} to redefine it", field="replace",
                         words={"replace": "replace=True"})
    assert error.message == "schedule '{a}' exists already: give replace=True to redefine it"
    assert cli_message(error) == "schedule '{a}' exists already: give --replace to redefine it"
    assert InvalidInput("a {brace} without a field").message == "a {brace} without a field"


def test_every_cli_word_is_a_flag_or_says_how() -> None:
    for field, word in CLI_WORDS.items():
        assert word.startswith(("--", "`jobctl ", "put it after --")), (field, word)
