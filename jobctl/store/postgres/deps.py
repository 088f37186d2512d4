"""PostgreSQL: the SQL of jobctl.store.deps (see its DepsSQL protocol)."""
