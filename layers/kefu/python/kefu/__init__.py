"""Kefu: the shared client layer (domain logic, ports and adapters, the chat pipeline)."""

__version__ = "0.1.0"
