"""SQLite: the SQL of jobctl.store.stats (see its StatsSQL protocol)."""
