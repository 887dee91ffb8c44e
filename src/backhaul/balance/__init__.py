"""balance layer (see ARCHITECTURE.md)."""
