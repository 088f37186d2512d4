"""PostgreSQL: checks (jobctl.store.checks.ChecksSQL)."""

from __future__ import annotations

from jobctl.store.checks import CHECK_COLUMNS
from jobctl.store.postgres import NOW

_COLUMNS = ", ".join(CHECK_COLUMNS)

# --- reading ------------------------------------------------------------------------------------

# One check by name, with the database's now (whether it is overdue is judged against it).
GET = f"SELECT {NOW}, {_COLUMNS} FROM checks WHERE name = %(name)s"
# The same, its row locked until the transaction ends (a ping, a redefinition).
# Differs by necessity: FOR UPDATE (SQLite's write transaction holds the whole database).
GET_FOR_UPDATE = f"{GET} FOR UPDATE"
# Every check, by name.
LIST_ALL = f"SELECT {NOW}, {_COLUMNS} FROM checks ORDER BY name"

# --- changing -----------------------------------------------------------------------------------

# A new check: its clock starts now (the caller's now, and the deadline computed from it).
CREATE = """
INSERT INTO checks (name, every_s, grace_s, on_overdue, created_at, updated_at, overdue_at)
VALUES (%(name)s, %(every_s)s, %(grace_s)s, %(on_overdue)s, CAST(%(now)s AS timestamptz),
        CAST(%(now)s AS timestamptz), CAST(%(overdue_at)s AS timestamptz))"""
# A check redefined (`check add --replace`): it starts afresh, as if new.
REPLACE = """
UPDATE checks SET every_s = %(every_s)s, grace_s = %(grace_s)s, on_overdue = %(on_overdue)s,
    created_at = CAST(%(now)s AS timestamptz), updated_at = CAST(%(now)s AS timestamptz),
    last_ping_at = NULL, last_fail_at = NULL, overdue_since = NULL,
    overdue_at = CAST(%(overdue_at)s AS timestamptz)
WHERE name = %(name)s"""
# Remove a check (its hooks' jobs stay).
DELETE = "DELETE FROM checks WHERE name = %(name)s"
# A successful ping: the deadline moves on, and an overdue spell ends.
PING = """
UPDATE checks SET last_ping_at = CAST(%(now)s AS timestamptz), overdue_since = NULL,
    overdue_at = CAST(%(overdue_at)s AS timestamptz)
WHERE id = %(id)s"""
# A failure ping: recorded (the spell it begins is MOVE's).
FAIL = "UPDATE checks SET last_fail_at = CAST(%(now)s AS timestamptz) WHERE id = %(id)s"
# Begin a spell or move the deadline, only if both are still what the caller read: of several
# schedulers (or a failure ping) noticing the same spell, exactly one gets the row back, and it
# alone inserts the hook job. A second one blocks on the row lock until the first commits, then
# finds overdue_since set and updates nothing.
MOVE = """
UPDATE checks SET overdue_since = CAST(%(since)s AS timestamptz),
    overdue_at = CAST(%(overdue_at)s AS timestamptz)
WHERE id = %(id)s
  AND overdue_since IS NOT DISTINCT FROM CAST(%(expected_since)s AS timestamptz)
  AND overdue_at = CAST(%(expected_overdue_at)s AS timestamptz)
RETURNING id"""

# --- the schedulers' overdue pass -----------------------------------------------------------------

# Checks not overdue whose deadline has passed, earliest first (ix_checks_overdue_at; the
# caller's now as a parameter, so that the index bounds the scan: none due, nothing read).
DUE = f"""
SELECT {NOW}, {_COLUMNS} FROM checks
WHERE overdue_since IS NULL AND overdue_at <= CAST(%(now)s AS timestamptz)
ORDER BY overdue_at
LIMIT %(limit)s"""
