"""config layer (see ARCHITECTURE.md)."""
