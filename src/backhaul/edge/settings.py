"""A validated config in the form the running edge reads it: frozen, typed dataclasses.

The config is validated once, with pydantic, by the process that starts or reloads the edge
(``backhaul serve``, the reload validator :mod:`backhaul.edge.candidate`). What the
supervisor and its workers then need is only the values, so :func:`freeze` turns the
validated model into the dataclasses of :mod:`backhaul.edge.runtime_config` (generated from
the models: same names, same fields, units already parsed; each cluster and proxy route also
carries its balance and retry policy objects) and pickles them; :func:`thaw` unpickles them.
The processes that serve traffic therefore never import pydantic, the CLI or the toolbox,
which keeps each of them small (see PERFORMANCE.md: RSS with 10,000 idle connections), and
mypy checks every field they read.
"""

from __future__ import annotations

import pickle
from typing import Any

from backhaul.edge import runtime_config as rt
from backhaul.net.socket_address import SocketAddress

__all__ = ["SocketAddress", "freeze", "runtime", "thaw"]

_LEFT_OUT = {"EdgeConfig": ("dhcp",)}  # the DHCP service validates its own section


def runtime(config: Any) -> rt.EdgeConfig:
    """The runtime form of a validated :class:`backhaul.config.EdgeConfig`."""
    from backhaul.config import balance_settings, retry_policy

    clusters = config.clusters

    def convert(value: Any) -> Any:
        model = type(value)
        fields = getattr(model, "model_fields", None)
        if fields is not None:  # a pydantic model: its runtime class, field by field
            name = model.__name__
            left_out = _LEFT_OUT.get(name, ())
            kwargs = {f: convert(getattr(value, f)) for f in fields if f not in left_out}
            if name == "Cluster":
                kwargs["balance"] = balance_settings(value)
                kwargs["retry"] = retry_policy(value.retries)
            elif name == "ProxyAction":
                cluster = clusters[value.cluster]
                retries = value.retries if value.retries is not None else cluster.retries
                kwargs["retry_policy"] = retry_policy(retries, value.retry_non_idempotent)
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


def freeze(config: Any) -> bytes:
    """Bytes of a validated config (a pydantic model) in its runtime form."""
    return pickle.dumps(runtime(config), protocol=5)


def thaw(data: bytes) -> rt.EdgeConfig:
    """The runtime config of :func:`freeze`'s bytes."""
    config = pickle.loads(data)  # our own bytes, handed from parent to child
    if not isinstance(config, rt.EdgeConfig):
        raise TypeError(f"not a frozen edge config: {type(config).__name__}")
    return config
