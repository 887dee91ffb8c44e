"""cache layer (see ARCHITECTURE.md)."""
