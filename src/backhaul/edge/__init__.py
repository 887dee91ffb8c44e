"""edge layer (see ARCHITECTURE.md)."""
