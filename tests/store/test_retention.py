"""Retention on both backends: a mixed database before and after `prune` — what goes (old
finished jobs with their attempts and output), what stays (recent, unfinished, and any job an
unfinished job depends on), --logs-only, --dry-run, state filters, batching; and table sizes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from obs_seed import Seeded, seed

from jobctl.models import JobState
from jobctl.store import jobs, reads, retention
from jobctl.store.schema import metadata


@pytest.fixture
def seeded(db_url: str) -> Iterator[Seeded]:
    data = seed(db_url)
    yield data
    data.close()


def job_names(seeded: Seeded) -> set[str]:
    with seeded.database.read() as conn:
        ids = set(reads.get_many(conn, seeded.ids.values()))
    return {name for name, job_id in seeded.ids.items() if job_id in ids}


def rows_of(seeded: Seeded, table: str, name: str) -> int:
    """Rows of `table` (job_logs, attempts) for the job called `name`."""
    with seeded.database.read() as conn:  # no parameter, so no backend's parameter style
        return int(conn.scalar(f"SELECT count(*) FROM {table} WHERE job_id = {seeded[name]}"))


OLD_PRUNABLE = {"old-ok", "old-failed", "old-cancelled", "needed-by-done", "dependent-done"}


def test_prune_deletes_old_finished_jobs_and_keeps_the_rest(seeded: Seeded) -> None:
    everything = set(seeded.ids)
    assert job_names(seeded) == everything
    assert rows_of(seeded, "job_logs", "old-ok") == 4
    assert rows_of(seeded, "attempts", "old-ok") == 1

    pruned = retention.prune(seeded.database, 30 * 86_400.0)

    # "needed" is as old as the others, but the waiting job depends on it; "needed-by-done"
    # goes, since the only job that depends on it has finished.
    assert job_names(seeded) == everything - OLD_PRUNABLE
    assert pruned.jobs == len(OLD_PRUNABLE)
    assert pruned.attempts == 4  # the cancelled job never ran
    assert pruned.log_chunks == 16
    assert pruned.log_bytes == sum(len(f"out {n}\n") for n in OLD_PRUNABLE - {"old-cancelled"})
    assert pruned.kept_for_dependents == 1
    for name in OLD_PRUNABLE:
        assert rows_of(seeded, "job_logs", name) == 0
        assert rows_of(seeded, "attempts", name) == 0
    assert rows_of(seeded, "job_logs", "recent-ok") == 4
    with seeded.database.read() as conn:
        deps = conn.execute("SELECT job_id, depends_on FROM job_deps").fetchall()
    assert [tuple(row) for row in deps] == [(seeded["waiting"], seeded["needed"])]

    # Once its dependent has finished, the kept job goes on the next run.
    with seeded.database.write() as conn:
        assert jobs.cancel(conn, seeded["waiting"]) is JobState.WAITING
    again = retention.prune(seeded.database, 30 * 86_400.0)
    assert again.jobs == 1 and again.kept_for_dependents == 0
    assert "needed" not in job_names(seeded)


def test_a_dry_run_counts_the_same_and_deletes_nothing(seeded: Seeded) -> None:
    dry = retention.prune(seeded.database, 30 * 86_400.0, dry_run=True)
    assert job_names(seeded) == set(seeded.ids)
    assert rows_of(seeded, "job_logs", "old-ok") == 4
    real = retention.prune(seeded.database, 30 * 86_400.0)
    assert dry.dry_run and not real.dry_run
    assert (dry.jobs, dry.attempts, dry.log_chunks, dry.log_bytes, dry.kept_for_dependents) == (
        real.jobs, real.attempts, real.log_chunks, real.log_bytes, real.kept_for_dependents)


def test_logs_only_keeps_jobs_and_attempts(seeded: Seeded) -> None:
    pruned = retention.prune(seeded.database, 30 * 86_400.0, logs_only=True)
    assert job_names(seeded) == set(seeded.ids)
    assert pruned.jobs == 0 and pruned.log_chunks == 16
    assert rows_of(seeded, "job_logs", "old-ok") == 0
    assert rows_of(seeded, "attempts", "old-ok") == 1
    assert rows_of(seeded, "job_logs", "needed") == 4  # its dependent may still want to read it
    assert rows_of(seeded, "job_logs", "recent-ok") == 4


def test_only_the_states_asked_for_and_older_than_the_cutoff(seeded: Seeded) -> None:
    pruned = retention.prune(seeded.database, 30 * 86_400.0, states=[JobState.FAILED])
    assert set(seeded.ids) - job_names(seeded) == {"old-failed", "needed-by-done"}
    assert pruned.jobs == 2
    # Nothing finished more than 50 days ago.
    assert retention.prune(seeded.database, 50 * 86_400.0).jobs == 0
    # A cutoff of zero takes recent jobs too, but never an unfinished one.
    retention.prune(seeded.database, 0.0)
    assert job_names(seeded) == {"needed", "running", "batch-running", "queued", "waiting"}


def test_batches_are_small_transactions_that_together_take_everything(seeded: Seeded) -> None:
    pruned = retention.prune(seeded.database, 30 * 86_400.0, batch=2)
    assert pruned.batches == 3
    assert job_names(seeded) == set(seeded.ids) - OLD_PRUNABLE


def test_an_unfinished_state_cannot_be_pruned(seeded: Seeded) -> None:
    with pytest.raises(ValueError, match="queued"):
        retention.prune(seeded.database, 0.0, states=[JobState.QUEUED])
    assert job_names(seeded) == set(seeded.ids)


def test_table_sizes_count_rows(seeded: Seeded) -> None:
    sizes = {t.table: t for t in retention.table_sizes(seeded.database)}
    assert list(retention.TABLES) == sorted(metadata.tables)  # every table of the schema
    assert {"jobs", "attempts", "job_logs", "workers", "job_deps"} <= set(sizes)
    assert sizes["jobs"].rows == len(seeded.ids)
    assert sizes["workers"].rows == 2
    assert sizes["job_logs"].rows == 24
    assert sizes["job_deps"].rows == 2
    if seeded.database.backend.title == "PostgreSQL":
        assert all(t.bytes is not None and t.bytes > 0 for t in sizes.values())
    else:  # dbstat may be missing from an SQLite build: then sizes are unknown, not wrong
        known = [t.bytes for t in sizes.values() if t.bytes is not None]
        assert all(size > 0 for size in known)
