"""PostgreSQL: the SQL of jobctl.store.submit (see its SubmitSQL protocol)."""
