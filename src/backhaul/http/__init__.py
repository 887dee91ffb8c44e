"""http layer (see ARCHITECTURE.md)."""
