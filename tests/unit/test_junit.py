"""JUnit reports (jobctl.junit): valid against Jenkins' schema (tests/data/junit-10.xsd, the
xunit plugin's junit-10.xsd), one testcase per job with its failure and output, and characters
XML 1.0 cannot hold replaced."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from lxml import etree

from jobctl.junit import Case, report, xml_bytes, xml_text

XSD = Path(__file__).resolve().parent.parent / "data" / "junit-10.xsd"
T0 = datetime(2026, 12, 6, 3, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(XSD)))


def validate(schema: etree.XMLSchema, document: bytes) -> etree._Element:
    root = etree.fromstring(document)
    assert schema.validate(root), schema.error_log
    return root


def case(name: str, state: str, exit_code: int | None = 0, **more: object) -> Case:
    return Case(name=name, classname="jobctl.default", state=state, time_s=1.5,
                exit_code=exit_code, error=more.pop("error", None),  # type: ignore[arg-type]
                started_at=T0, finished_at=T0 + timedelta(seconds=2), created_at=T0,
                **more)  # type: ignore[arg-type]


def test_a_report_of_every_outcome_validates(schema: etree.XMLSchema) -> None:
    cases = [
        case("ok", "succeeded", stdout=b"all good\n"),
        case("bad", "failed", 3, error="exit code 3", stderr=b"boom\n"),
        case("gone", "lost", None, error="its worker was lost"),
        case("stopped", "cancelled", None, error="cancelled before it started"),
    ]
    root = validate(schema, report("array 7", cases, hostname="ci-1"))
    assert root.tag == "testsuite"
    assert (root.get("tests"), root.get("failures"), root.get("errors"),
            root.get("skipped")) == ("4", "2", "0", "1")
    assert root.get("timestamp") == "2026-12-06T03:00:00"
    assert root.get("time") == "2.000"
    by_name = {element.get("name"): element for element in root.iter("testcase")}
    assert by_name["ok"].find("failure") is None
    assert by_name["ok"].findtext("system-out") == "all good\n"
    failure = by_name["bad"].find("failure")
    assert failure is not None and failure.get("type") == "failed"
    assert "exit code 3" in (failure.get("message") or "")
    assert by_name["bad"].findtext("system-err") == "boom\n"
    assert by_name["gone"].find("failure") is not None
    assert by_name["stopped"].find("skipped") is not None
    assert by_name["ok"].get("time") == "1.500"


def test_characters_xml_cannot_hold_are_replaced(schema: etree.XMLSchema) -> None:
    hostile = b"esc \x1b[2J nul \x00 bell \x07 bad utf-8 \xff\xfe tab\tok \xef\xbf\xbe end"
    document = report("suite \x01", [case("name \x1b", "failed", 1, error="err \x00",
                                          stdout=hostile, stderr=hostile)])
    root = validate(schema, document)  # parses at all: no character XML 1.0 forbids
    out = root.find("testcase").findtext("system-out")  # type: ignore[union-attr]
    assert "\x1b" not in out and "\x00" not in out and "\ufffe" not in out
    assert "esc \ufffd[2J nul \ufffd" in out and "tab\tok" in out
    assert root.get("name") == "suite \ufffd"


def test_xml_text_keeps_what_xml_can_hold() -> None:
    text = "tab\tnewline\ncr\r ünïcødé \U0001f600 \ud7ff \ue000"
    assert xml_text(text) == text
    assert xml_text("\x0b\x0c\ud800\uffff") == "\ufffd" * 4
    assert xml_bytes(b"ok \xc3") == "ok \ufffd"


def test_an_empty_wait_is_an_empty_suite(schema: etree.XMLSchema) -> None:
    root = validate(schema, report("jobctl job wait", []))
    assert root.get("tests") == "0" and root.get("failures") == "0"
