"""Everything that talks SQL. `queue.py` is the hot path; the rest is plain CRUD."""
