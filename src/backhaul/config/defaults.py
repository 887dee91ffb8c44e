"""The embedded default config and quick mode (``serve --to URL --listen ADDR``)."""

from __future__ import annotations

from functools import lru_cache

from backhaul.config.load import load_data, load_text
from backhaul.config.model import EdgeConfig
from backhaul.config.units import UnitError, parse_address
from backhaul.errors import ConfigError

__all__ = ["DEFAULT_YAML", "default_config", "quick_config"]

DEFAULT_YAML = """\
# backhaul's embedded default: `backhaul serve` with no config runs this.
# One listener on 127.0.0.1:8080 proxying everything to two built-in demo origins that
# say which of them answered and echo the request line. Try: curl localhost:8080/
listeners:
  - name: main
    address: 127.0.0.1:8080
routes:
  - name: default
    proxy:
      cluster: demo
clusters:
  demo:
    endpoints:
      - builtin: echo
      - builtin: echo
"""


@lru_cache(maxsize=1)
def default_config() -> EdgeConfig:
    """The embedded default (a frozen config, shared)."""
    return load_text(DEFAULT_YAML, "<embedded default>")


def quick_config(
    to: str, listen: str = "127.0.0.1:8080", tls: dict[str, object] | None = None
) -> EdgeConfig:
    """One listener on ``listen`` proxying everything to the single upstream ``to``
    (``"http://127.0.0.1:3000"``, ``"127.0.0.1:3000"``, or ``"https://..."`` for TLS to it,
    verified against the system store); ``tls`` is the listener's ``tls`` block (HTTPS).
    ConfigError if anything is bad."""
    source = "<command line>"
    problems: list[tuple[str, str]] = []
    upstream_tls = to.strip().lower().startswith("https://")
    upstream = _upstream(to, problems)
    try:
        parse_address(listen)
    except UnitError as exc:
        problems.append(("--listen", str(exc)))
    if problems:
        raise ConfigError(source, problems)
    listener: dict[str, object] = {"name": "main", "address": listen}
    if tls is not None:
        listener["tls"] = tls
    cluster: dict[str, object] = {"endpoints": [{"address": upstream}]}
    if upstream_tls:
        cluster["tls"] = {}
    data = {
        "listeners": [listener],
        "routes": [{"name": "default", "proxy": {"cluster": "upstream"}}],
        "clusters": {"upstream": cluster},
    }
    return load_data(data, source)


def _upstream(to: str, problems: list[tuple[str, str]]) -> str:
    text = to.strip()
    scheme, sep, rest = text.partition("://")
    if not sep:
        rest = text
    elif scheme.lower() not in ("http", "https"):
        problems.append(("--to", f"found the scheme {scheme!r}: expected http:// or https://"))
        return ""
    authority, slash, path = rest.partition("/")
    if slash and path:
        problems.append(("--to", f"found the path '/{path}': expected only scheme, host and port"))
        return ""
    if sep and authority and (authority.endswith("]") or ":" not in authority):
        authority += ":443" if scheme.lower() == "https" else ":80"
    try:
        address = parse_address(authority)
    except UnitError as exc:
        problems.append(("--to", str(exc)))
        return ""
    if address.port == 0:
        problems.append(("--to", f"found port 0 in {to!r}: expected a port 1-65535"))
        return ""
    return str(address)
