"""The engine, its worker, the one execution runner and the per-kind handlers."""
