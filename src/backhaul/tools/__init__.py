"""tools layer (see ARCHITECTURE.md)."""
