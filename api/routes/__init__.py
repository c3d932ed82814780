"""The REST routes, one module per resource (interfaces.md, section 3)."""
