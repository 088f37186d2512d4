"""PostgreSQL: the SQL of jobctl.store.retention (see its RetentionSQL protocol)."""
