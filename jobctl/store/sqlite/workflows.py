"""SQLite: the SQL of jobctl.store.workflows (see its WorkflowsSQL protocol)."""
