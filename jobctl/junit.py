"""JUnit XML for CI (`job wait --junit FILE`, `workflow wait --junit FILE`): one <testcase> per
job, workflow task or array task, one <testsuite> per wait, as Jenkins (its JUnit schema,
junit-10.xsd) and GitLab read it.

Plain functions of plain data, tested without a database: the client gathers the jobs and the
tails of their output, `report` builds the document with xml.etree.ElementTree.

- A job that succeeded is a passing testcase. One that failed or was lost has a <failure> (its
  exit code and error in `message`, `type` its state), one cancelled or skipped a <skipped>: it
  did not run to an end. `errors` stays 0: a failure is the command's own.
- `time` is how long its last attempt ran, in seconds; the suite's the wall time from the first
  start to the last end; `timestamp` when the suite's first job was created (ISO 8601, UTC,
  without a zone, as JUnit writers do).
- The tail of its stdout and stderr (OUTPUT_TAIL_BYTES each) goes into <system-out> and
  <system-err>, decoded as UTF-8 (bytes that are not, as U+FFFD), with every character XML 1.0
  cannot hold (most C0 controls, lone surrogates, U+FFFE/U+FFFF) replaced by U+FFFD.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from jobctl.record import record

# How much of each stream of a job's output a testcase carries: the last 64 KiB.
OUTPUT_TAIL_BYTES = 64 * 1024

# What XML 1.0 cannot hold: Char ::= #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] |
# [#x10000-#x10FFFF].
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
REPLACEMENT = "\ufffd"


def xml_text(text: str) -> str:
    """`text` with every character XML 1.0 cannot hold replaced by U+FFFD."""
    return _NOT_XML.sub(REPLACEMENT, text)


def xml_bytes(data: bytes) -> str:
    """Output bytes as XML text: UTF-8 (else U+FFFD per bad byte), then xml_text."""
    return xml_text(data.decode("utf-8", errors="replace"))


@record
class Case:
    """One job as a testcase."""

    name: str
    classname: str
    state: str  # the job's final state (or its state when the wait gave up)
    time_s: float | None  # how long its last attempt ran
    exit_code: int | None
    error: str | None
    stdout: bytes = b""
    stderr: bytes = b""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    created_at: datetime | None = None


def _seconds(value: float | None) -> str:
    return f"{max(0.0, value or 0.0):.3f}"


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def failure_message(case: Case) -> str:
    """`exit code 3: …error`, or the state and error when it has no exit code."""
    parts = [f"exit code {case.exit_code}" if case.exit_code is not None else case.state]
    if case.error and case.error != parts[0]:  # (a failed job's error is often just that)
        parts.append(case.error)
    return ": ".join(parts)


def report(suite_name: str, cases: Sequence[Case], *, hostname: str | None = None) -> bytes:
    """The JUnit XML document (UTF-8, with its declaration) of one wait."""
    import xml.etree.ElementTree as ET

    failures = sum(case.state in ("failed", "lost") for case in cases)
    skipped = sum(case.state in ("cancelled", "skipped") for case in cases)
    starts = [case.started_at for case in cases if case.started_at is not None]
    ends = [case.finished_at for case in cases if case.finished_at is not None]
    created = [case.created_at for case in cases if case.created_at is not None]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    suite = ET.Element("testsuite", {
        "name": xml_text(suite_name), "tests": str(len(cases)), "failures": str(failures),
        "errors": "0", "skipped": str(skipped), "time": _seconds(wall),
        "timestamp": _timestamp(min(created) if created else datetime.now(UTC))})
    if hostname:
        suite.set("hostname", xml_text(hostname))
    for case in cases:
        element = ET.SubElement(suite, "testcase", {
            "name": xml_text(case.name), "classname": xml_text(case.classname),
            "time": _seconds(case.time_s)})
        message = xml_text(failure_message(case))
        if case.state in ("failed", "lost"):
            failure = ET.SubElement(element, "failure", {"message": message,
                                                         "type": case.state})
            failure.text = message
        elif case.state in ("cancelled", "skipped"):
            ET.SubElement(element, "skipped", {"message": message, "type": case.state})
        elif case.state != "succeeded":  # the wait gave up: it had not ended
            error = ET.SubElement(element, "error", {"message": message, "type": case.state})
            error.text = message
        if case.stdout:
            ET.SubElement(element, "system-out").text = xml_bytes(case.stdout)
        if case.stderr:
            ET.SubElement(element, "system-err").text = xml_bytes(case.stderr)
    errors = sum(element.find("error") is not None for element in suite.iter("testcase"))
    suite.set("errors", str(errors))
    return bytes(ET.tostring(suite, encoding="utf-8", xml_declaration=True))
