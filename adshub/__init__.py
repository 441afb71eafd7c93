"""adshub: the intake hub of a housing management company's emergency dispatch service (АДС)."""
