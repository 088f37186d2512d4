"""PostgreSQL: the SQL of jobctl.store.queue (see its QueueSQL protocol)."""
