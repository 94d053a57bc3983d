"""Job definitions: one module per kind."""
