"""Passwords in database URLs are hidden wherever a URL is printed (`jobctl.config.mask_password`,
and `redact` for one-line messages)."""

from __future__ import annotations

import pytest

from jobctl.config import mask_password, redact


@pytest.mark.parametrize(("url", "shown"), [
    ("postgresql://jobctl:secret@db/jobctl", "postgresql://jobctl:***@db/jobctl"),
    ("postgresql://jobctl:se@cr@et@db:5432/jobctl", "postgresql://jobctl:***@db:5432/jobctl"),
    ("postgresql://:secret@db/jobctl", "postgresql://:***@db/jobctl"),
    ("postgresql+psycopg://u:p%40ss@h1:5432,h2:5432/db",
     "postgresql+psycopg://u:***@h1:5432,h2:5432/db"),
    ("postgresql://u@db/jobctl?password=secret&sslmode=require",
     "postgresql://u@db/jobctl?password=***&sslmode=require"),
    ("host=db user=u PASSWORD=secret dbname=j", "host=db user=u PASSWORD=*** dbname=j"),
    ("postgresql://jobctl@db:5432/jobctl", "postgresql://jobctl@db:5432/jobctl"),
    ("sqlite:////var/lib/jobctl/jobctl.db", "sqlite:////var/lib/jobctl/jobctl.db"),
])
def test_mask_password(url: str, shown: str) -> None:
    assert mask_password(url) == shown
    assert "secret" not in mask_password(url) and "cr@et" not in mask_password(url)


def test_redact_shortens_but_still_masks() -> None:
    url = f"postgresql://jobctl:secret@{'x' * 100}/jobctl"
    assert redact(url) == mask_password(url)[:77] + "..."
    assert "secret" not in redact(url)
