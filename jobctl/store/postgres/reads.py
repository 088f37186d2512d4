"""PostgreSQL: the SQL of jobctl.store.reads (see its ReadsSQL protocol)."""
