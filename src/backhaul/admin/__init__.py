"""admin layer (see ARCHITECTURE.md)."""
