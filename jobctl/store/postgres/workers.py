"""PostgreSQL: the SQL of jobctl.store.workers (see its WorkersSQL protocol)."""
