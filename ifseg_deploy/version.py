"""The package version (one place; read by every writer that records it)."""

__version__ = "0.1.0"
