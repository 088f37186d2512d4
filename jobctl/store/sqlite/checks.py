"""SQLite: checks (jobctl.store.checks.ChecksSQL).

No row locks here: every change runs in the caller's write transaction (BEGIN IMMEDIATE), which
lets one writer in at a time.
"""

from __future__ import annotations

from jobctl.store.checks import CHECK_COLUMNS
from jobctl.store.sqlite import NOW

_COLUMNS = ", ".join(CHECK_COLUMNS)

# --- reading ------------------------------------------------------------------------------------

# One check by name, with the database's now (whether it is overdue is judged against it).
GET = f"SELECT {NOW}, {_COLUMNS} FROM checks WHERE name = :name"
# Differs by necessity: no FOR UPDATE; the write transaction holds the whole database.
GET_FOR_UPDATE = GET
# Every check, by name.
LIST_ALL = f"SELECT {NOW}, {_COLUMNS} FROM checks ORDER BY name"

# --- changing -----------------------------------------------------------------------------------

# A new check: its clock starts now (the caller's now, and the deadline computed from it).
CREATE = """
INSERT INTO checks (name, every_s, grace_s, on_overdue, created_at, updated_at, overdue_at)
VALUES (:name, :every_s, :grace_s, :on_overdue, :now, :now, :overdue_at)"""
# A check redefined (`check add --replace`): it starts afresh, as if new.
REPLACE = """
UPDATE checks SET every_s = :every_s, grace_s = :grace_s, on_overdue = :on_overdue,
    created_at = :now, updated_at = :now, last_ping_at = NULL, last_fail_at = NULL,
    overdue_since = NULL, overdue_at = :overdue_at
WHERE name = :name"""
# Remove a check (its hooks' jobs stay).
DELETE = "DELETE FROM checks WHERE name = :name"
# A successful ping: the deadline moves on, and an overdue spell ends.
PING = """
UPDATE checks SET last_ping_at = :now, overdue_since = NULL, overdue_at = :overdue_at
WHERE id = :id"""
# A failure ping: recorded (the spell it begins is MOVE's).
FAIL = "UPDATE checks SET last_fail_at = :now WHERE id = :id"
# Begin a spell or move the deadline, only if both are still what the caller read: of several
# schedulers (or a failure ping) noticing the same spell, exactly one changes the row (they take
# turns at the write lock; the later ones find overdue_since set) and alone inserts the hook job.
MOVE = """
UPDATE checks SET overdue_since = :since, overdue_at = :overdue_at
WHERE id = :id AND overdue_since IS :expected_since AND overdue_at = :expected_overdue_at
RETURNING id"""

# --- the schedulers' overdue pass -----------------------------------------------------------------

# Checks not overdue whose deadline has passed, earliest first (ix_checks_overdue_at).
DUE = f"""
SELECT {NOW}, {_COLUMNS} FROM checks
WHERE overdue_since IS NULL AND overdue_at <= :now
ORDER BY overdue_at
LIMIT :limit"""
