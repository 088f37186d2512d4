"""SQLite: the SQL of jobctl.store.names (see its NamesSQL protocol). Each look-up matches
a LIKE pattern (a prefix, \\ escaping) and returns at most :limit rows."""

# Jobs whose id starts with the prefix, newest first by the primary key; the prefix test reads
# only what it returns.
RECENT_JOBS = """
SELECT id, coalesce(name, ''), state FROM jobs
WHERE CAST(id AS TEXT) LIKE :prefix ESCAPE '\\'
ORDER BY id DESC LIMIT :limit"""

# Queues that jobs were submitted to, or that have settings (`jobctl queue set`, `pause`).
QUEUES = """
SELECT queue FROM jobs WHERE queue LIKE :prefix ESCAPE '\\'
UNION
SELECT name FROM queues WHERE name LIKE :prefix ESCAPE '\\'
ORDER BY 1 LIMIT :limit"""

# Workers by name, newest first (a restarted worker's name comes more than once).
WORKERS = """
SELECT name, state FROM workers WHERE name LIKE :prefix ESCAPE '\\'
ORDER BY id DESC LIMIT :limit"""

# Schedules by name.
SCHEDULES = """
SELECT name FROM schedules WHERE name LIKE :prefix ESCAPE '\\'
ORDER BY name LIMIT :limit"""

# Workflows whose id starts with the prefix, newest first.
WORKFLOWS = """
SELECT id, name FROM workflows
WHERE CAST(id AS TEXT) LIKE :prefix ESCAPE '\\'
ORDER BY id DESC LIMIT :limit"""

# Checks by name.
CHECKS = """
SELECT name FROM checks WHERE name LIKE :prefix ESCAPE '\\'
ORDER BY name LIMIT :limit"""
