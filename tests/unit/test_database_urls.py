"""Database URLs with several servers (libpq's failover: `postgresql://h1:p1,h2:p2/db`,
`?host=h1,h2&port=p1,p2`, `host=h1,h2 port=p1,p2`), read the same way by every part of jobctl:
the commands, workers, schedulers and LISTEN connections (psycopg gets the URL as given), the
messages that name the database (`where`), the completion look-ups, and the migrations' engine
(SQLAlchemy's `?host=…&port=…`). No database: jobctl's reading (jobctl.store.url) is held equal
to libpq's own (psycopg.conninfo.conninfo_to_dict, which asks libpq to parse)."""

from __future__ import annotations

import random

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from jobctl.config import mask_password
from jobctl.errors import InvalidInput
from jobctl.store.direct import locate
from jobctl.store.engine import Database
from jobctl.store.url import libpq_keywords, parse

FAILOVER = "postgresql://u:s%40cret@10.0.0.1:5433,10.0.0.2:5434/jobs?target_session_attrs=read-write"

CONNINFOS = [
    FAILOVER,
    "postgresql://h1,h2/db",
    "postgresql://h1:5433,h2/db",
    "postgresql://h1,h2:5434/db",
    "postgresql://h1:5433,h2:5434,h3:5435/db?target_session_attrs=primary",
    "postgres://u@[::1]:5433,[fe80::1],db.example/jobs",
    "postgresql:///jobs?host=h1,h2&port=5433,5434&target_session_attrs=read-write",
    "postgresql:///jobs?host=h1,h2&port=5433",
    "postgresql://h1,h2:5434/db?port=6000",
    "postgresql://h1:5433,/db",
    "postgresql://,/db",
    "postgresql://u:se@cr@et@db:5432/jobctl",  # libpq: password "se", host "cr@et@db"
    "postgresql://u@/jobs?host=/run/postgresql",
    "postgresql://h/d%20b?application_name=a%20b&sslmode=disable",
    "postgresql://h/db?ssl=true",
    "postgresql://h/db?connect_timeout=3&",
    "postgresql://",
    "postgresql://h/",
    "host=h1,h2 port=5433,5434 dbname=jobs target_session_attrs=read-write",
    "host = h1,h2  port=5433 dbname = jobs user=u password='it\\'s a secret'",
    "hostaddr=10.0.0.1,10.0.0.2 port=5433,5434 dbname=jobs",
    "dbname=jobs host='/run/post gresql' application_name=a\\ b",
    # What libpq refuses to parse.
    "postgresql://[::1/db",
    "postgresql://[]:5432/db",
    "postgresql://[::1]x/db",
    "postgresql://h/db?target_session_attrs",
    "postgresql://h/db?application_name=a=b",
    "postgresql://h/db?application_name=%zz",
    "postgresql://h%00/db",
    "host=h1 port",
    "host='h1",
]


def _libpq(conninfo: str) -> dict[str, str] | None:
    """libpq's keywords, or None where libpq refuses the conninfo."""
    try:
        return conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return None


# The keywords this libpq knows. jobctl leaves naming an unknown one to libpq (when connecting),
# so a conninfo with one counts as refused by both.
KEYWORDS = {option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults()}


def _ours(conninfo: str) -> dict[str, str] | None:
    try:
        keywords = libpq_keywords(conninfo)
    except ValueError:
        return None
    return keywords if set(keywords) <= KEYWORDS else None


@pytest.mark.parametrize("conninfo", CONNINFOS)
def test_jobctl_reads_a_conninfo_as_libpq_does(conninfo: str) -> None:
    assert _ours(conninfo) == _libpq(conninfo)


def _random_url(rng: random.Random) -> str:
    def piece(alphabet: list[str], most: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, most)))

    text = rng.choice(["postgresql://", "postgres://"])
    credentials = ["u", "x", ":", "@", "%40", "%3A", "/", "%2"]
    if rng.random() < 0.5:
        text += piece(credentials, 4) + "@"
    hosts = ["", "h1", "db.example", "10.0.0.1", "[::1]", "[fe80::1%25eth0]", "[]", "%2Frun",
             "h%2C2", "[::1", "?", "@"]
    ports = ["", ":", ":5432", ":6543", ":x", ":%35", "::1"]
    text += ",".join(rng.choice(hosts) + rng.choice(ports) for _ in range(rng.randint(1, 3)))
    text += rng.choice(["", "/", "/db", "/d%20b", "/d@b", "/a/b", "/%zz"])
    if rng.random() < 0.6:
        keys = ["host", "port", "dbname", "user", "password", "target_session_attrs",
                "application_name", "connect_timeout", "sslmode"]
        values = ["h", "1", "5432,5433", "h1,h2", "read-write", "a%20b", "", "=", "%2C", "@"]
        parameters = [rng.choice([f"{rng.choice(keys)}={rng.choice(values)}", "ssl=true",
                                  rng.choice(keys), ""]) for _ in range(rng.randint(0, 3))]
        text += "?" + "&".join(parameters)
    return text


def test_jobctl_reads_two_thousand_odd_urls_as_libpq_does() -> None:
    rng = random.Random(17)
    differ = [url for url in (_random_url(rng) for _ in range(2000))
              if _ours(url) != _libpq(url)]
    assert not differ, [(url, _ours(url), _libpq(url)) for url in differ[:5]]


@pytest.mark.parametrize(("url", "where", "servers"), [
    (FAILOVER, "PostgreSQL at 10.0.0.1:5433,10.0.0.2:5434/jobs",
     [("10.0.0.1", 5433), ("10.0.0.2", 5434)]),
    ("postgresql+psycopg://h1,h2/jobs", "PostgreSQL at h1:5432,h2:5432/jobs",
     [("h1", None), ("h2", None)]),
    ("postgres://[::1]:5433,h2/jobs", "PostgreSQL at [::1]:5433,h2:5432/jobs",
     [("::1", 5433), ("h2", None)]),
    ("postgresql:///jobs?host=h1,h2&port=5433,5434", "PostgreSQL at h1:5433,h2:5434/jobs",
     [("h1", 5433), ("h2", 5434)]),
    ("host=h1,h2 port=5433 dbname=jobs password=secret", "PostgreSQL at h1:5433,h2:5433/jobs",
     [("h1", 5433), ("h2", 5433)]),
    ("postgresql://u@/jobs?host=/run/pg,h2", "PostgreSQL at /run/pg (socket):5432,h2:5432/jobs",
     [("/run/pg", None), ("h2", None)]),
])
def test_every_server_is_named_in_order_and_no_password(url: str, where: str,
                                                         servers: list[tuple[str, int | None]]
                                                         ) -> None:
    location = parse(url)
    assert (location.backend, location.where, location.servers) == ("postgresql", where, servers)
    assert "cret" not in location.where


@pytest.mark.parametrize(("url", "reason"), [
    ("postgresql://u:secret@h1:5433,h2:x/jobs", "port 'x' is not a number"),
    ("host=h1,h2,h3 port=1,2 password=secret", "2 ports for 3 hosts"),
    ("postgresql://u:secret@[::1/jobs", 'no "]" ends the IPv6 host address'),
    ("host='h1 password=secret", "a quoted value that does not end"),
])
def test_a_conninfo_libpq_would_refuse_is_refused_at_once(url: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse(url)
    assert reason in caught.value.message
    assert caught.value.message.startswith("invalid database URL")
    assert "secret" not in caught.value.message


@pytest.mark.parametrize("url", [FAILOVER, "postgresql://h1,h2:5434/jobs",
                                 "postgresql:///jobs?host=h1,h2&port=5433&sslmode=disable",
                                 "host=h1,[::1],/run/pg port=5433,5434,5435 dbname=jobs"])
def test_the_direct_road_listen_and_the_migrations_engine_reach_the_same_servers(url: str
                                                                                  ) -> None:
    """psycopg (commands, workers, schedulers, LISTEN) is given the URL as it is; SQLAlchemy's
    engine (migrations, `db status`) the same servers in the same order, each with its port."""
    location = locate(url)
    assert location is not None
    libpq = conninfo_to_dict(location.target)
    hosts = libpq.get("host", "").split(",")
    ports = libpq.get("port", "").split(",")
    ports = ports * len(hosts) if len(ports) == 1 else ports
    assert [(host, int(port) if port else None) for host, port in zip(hosts, ports, strict=True)
            ] == location.servers
    assert parse(location.target) == location  # what a LISTEN connection parses again

    engine = Database(url).engine
    _, options = engine.dialect.create_connect_args(engine.url)
    assert options["host"].split(",") == hosts
    assert options["port"].split(",") == [str(port or "") for _, port in location.servers]
    for keyword in ("user", "password", "dbname", "target_session_attrs", "sslmode"):
        assert options.get(keyword) == libpq.get(keyword), keyword
    engine.dispose()


def test_a_password_in_libpq_key_value_form_is_masked_whole() -> None:
    shown = mask_password("host=h1,h2 password = 'it\\'s a secret' dbname=jobs")
    assert shown == "host=h1,h2 password = *** dbname=jobs"
    assert mask_password("host=h password=a\\ secret dbname=j") == "host=h password=*** dbname=j"
