"""A validated config in the form the running edge reads it: frozen, typed records.

The config is validated once, with pydantic, by the process that starts or reloads the edge
(``backhaul serve``, the reload validator :mod:`backhaul.edge.candidate`). What the
supervisor and its workers then need is only the values, so :func:`freeze` turns the
validated model into the records of :mod:`backhaul.edge.runtime_config` (generated from the
models: same names, same fields, units already parsed: plain data, so that unpickling them
imports nothing but that module, neither typing nor dataclasses) and pickles them;
:func:`thaw` unpickles them. The workers build the balance package's objects from them
(:mod:`backhaul.edge.balancing`).
The processes that serve traffic therefore never import pydantic, the CLI or the toolbox,
which keeps each of them small (see PERFORMANCE.md: RSS with 10,000 idle connections), and
mypy checks every field they read.
"""

from __future__ import annotations

import pickle

from backhaul.edge import runtime_config as rt
from backhaul.errors import ConfigError
from backhaul.net.socket_address import SocketAddress

TYPE_CHECKING = False  # without importing typing: a supervisor thaws with this (RSS)
if TYPE_CHECKING:
    from typing import Any

__all__ = ["SocketAddress", "freeze", "runtime", "thaw"]

_LEFT_OUT = {"EdgeConfig": ("dhcp",)}  # the DHCP service validates its own section


def runtime(config: Any, source: str = "<config>") -> rt.EdgeConfig:
    """The runtime form of a validated :class:`backhaul.config.EdgeConfig`. The config's
    own checks cover what the balance classes refuse; should one be missing, the refusal is a
    :class:`ConfigError` naming the cluster (``source``: the file), not a crash."""
    from backhaul.edge.balancing import balance_settings, retry_policy

    clusters = config.clusters
    for name, cluster in clusters.items():
        try:
            balance_settings(cluster)
            retry_policy(cluster.retries)
        except ValueError as exc:
            path = f"clusters.{name}"
            raise ConfigError(source, [(path, f"refused by the balancer: {exc}")]) from exc

    def convert(value: Any) -> Any:
        model = type(value)
        fields = getattr(model, "model_fields", None)
        if fields is not None:  # a pydantic model: its runtime class, field by field
            name = model.__name__
            left_out = _LEFT_OUT.get(name, ())
            kwargs = {f: convert(getattr(value, f)) for f in fields if f not in left_out}
            return rt.CLASSES[name](**kwargs)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, tuple) and hasattr(value, "_fields") and hasattr(value, "port"):
            return SocketAddress(str(value[0]), int(value[1]))
        if isinstance(value, list | tuple):
            return tuple(convert(v) for v in value)
        if isinstance(value, int | float | str | bytes) or value is None:
            return value
        raise TypeError(f"cannot freeze a config value of type {type(value).__name__}")

    result = convert(config)
    assert isinstance(result, rt.EdgeConfig)
    return result


def freeze(config: Any, source: str = "<config>") -> bytes:
    """Bytes of a validated config (a pydantic model) in its runtime form."""
    return pickle.dumps(runtime(config, source), protocol=5)


def thaw(data: bytes) -> rt.EdgeConfig:
    """The runtime config of :func:`freeze`'s bytes."""
    config = pickle.loads(data)  # our own bytes, handed from parent to child
    if not isinstance(config, rt.EdgeConfig):
        raise TypeError(f"not a frozen edge config: {type(config).__name__}")
    return config
