"""A validated config in the form the running edge reads it: plain values behind attributes.

The config is validated once, with pydantic, by the command that starts the edge. What the
supervisor and its workers then need is only the values, so :func:`freeze` turns the
validated model into bytes of plain Python data (dicts, lists, numbers, strings, addresses as
``(host, port)``) and :func:`thaw` turns those bytes into read-only attribute trees. The
processes that serve traffic therefore never import pydantic, the CLI or the toolbox, which
keeps each of them small (see PERFORMANCE.md: RSS with 10,000 idle connections).
"""

from __future__ import annotations

import pickle
from typing import Any

__all__ = ["Node", "SocketAddress", "freeze", "thaw", "unpickle"]

_ADDRESS_TAG = "__address__"


class SocketAddress(tuple[str, int]):
    """``(host, port)`` with ``.host``, ``.port`` and ``str()`` as ``[::1]:8080``."""

    __slots__ = ()

    def __new__(cls, host: str, port: int) -> SocketAddress:
        return super().__new__(cls, (host, port))

    @property
    def host(self) -> str:
        return self[0]

    @property
    def port(self) -> int:
        return self[1]

    def __str__(self) -> str:
        host, port = self
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Node:
    """A read-only mapping with attribute access (one level of a thawed config)."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        object.__setattr__(self, "_data", data)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._data[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a thawed config is read-only")

    def items(self) -> Any:
        return self._data.items()

    def values(self) -> Any:
        return self._data.values()

    def keys(self) -> Any:
        return self._data.keys()

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __iter__(self) -> Any:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Node({self._data!r})"


def _plain(value: Any) -> Any:
    """Model values → data that unpickles without importing backhaul.config."""
    fields = getattr(type(value), "model_fields", None)
    if fields is not None:  # a pydantic model: its fields, typed as validated
        return {name: _plain(getattr(value, name)) for name in fields}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields") and hasattr(value, "port"):
        return {_ADDRESS_TAG: [value.host, value.port]}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, int | float | str | bool) or value is None:
        return value
    if type(value).__module__.startswith("backhaul.balance."):
        return value  # a policy object (frozen dataclass): pickled as it is
    raise TypeError(f"cannot freeze a config value of type {type(value).__name__}")


def _node(value: Any) -> Any:
    if isinstance(value, dict):
        if _ADDRESS_TAG in value:
            host, port = value[_ADDRESS_TAG]
            return SocketAddress(host, port)
        return Node({k: _node(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_node(v) for v in value)
    return value


def freeze(config: Any) -> bytes:
    """Bytes of a validated config (a pydantic model) as plain data.

    Each cluster also carries ``runtime``: the balance policy objects the config maps it to
    (``balance``: BalanceSettings, ``retry``: RetryPolicy), and each proxy route
    ``runtime_retry``: its effective RetryPolicy; the mapping is the config's own
    (:func:`backhaul.config.balance_settings`, :func:`backhaul.config.retry_policy`). Both
    stay pickled bytes after :func:`thaw`; :func:`unpickle` opens them in a worker.
    """
    from backhaul.config import balance_settings, retry_policy

    data = _plain(config)
    for name, cluster in config.clusters.items():
        # Pickled once more: only the workers unpickle them (the supervisor stays without
        # the balance package).
        data["clusters"][name]["runtime"] = pickle.dumps(
            {"balance": balance_settings(cluster), "retry": retry_policy(cluster.retries)}
        )
    for i, route in enumerate(config.routes):
        proxy = route.proxy
        if proxy is None:
            continue
        cluster = config.clusters[proxy.cluster]
        retries = proxy.retries if proxy.retries is not None else cluster.retries
        data["routes"][i]["proxy"]["runtime_retry"] = pickle.dumps(
            retry_policy(retries, proxy.retry_non_idempotent)
        )
    return pickle.dumps(data, protocol=5)


def unpickle(data: bytes) -> Any:
    """A policy object that :func:`freeze` pickled for the workers."""
    return pickle.loads(data)  # our own bytes, handed from parent to child


def thaw(data: bytes) -> Node:
    """The attribute tree of :func:`freeze`'s bytes."""
    return _node(pickle.loads(data))  # our own bytes, handed from parent to child
