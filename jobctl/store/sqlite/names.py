"""SQLite: the SQL of jobctl.store.names (see its NamesSQL protocol)."""
