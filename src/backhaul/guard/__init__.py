"""guard layer (see ARCHITECTURE.md)."""
