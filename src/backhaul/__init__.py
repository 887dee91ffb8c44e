"""backhaul: command the network your services live on."""

from backhaul.errors import BackhaulError, ConfigError

__version__ = "0.1.0"

__all__ = ["BackhaulError", "ConfigError", "__version__"]
