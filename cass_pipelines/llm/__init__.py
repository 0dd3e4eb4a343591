"""LLM layer: one client protocol, an Anthropic backend, an offline backend, and pricing."""
