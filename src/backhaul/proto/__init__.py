"""proto layer (see ARCHITECTURE.md)."""
