"""PostgreSQL: the SQL of jobctl.store.jobs (see its JobsSQL protocol)."""
