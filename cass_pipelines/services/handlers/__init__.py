"""Action handlers: one function per registry action (see data/definitions.json)."""
