"""SQLite: the SQL of jobctl.store.schedules (see its SchedulesSQL protocol)."""
