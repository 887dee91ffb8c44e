"""DNS response rate limiting (RRL) and the client-address checks of a DNS server.

RRL keeps a DNS server from amplifying a spoofed-source attack: UDP responses are counted
per client network (an IPv4 /24, an IPv6 /56, as BIND's RRL does) with a token bucket of
``responses_per_second`` and a burst of ``burst``. Past the limit a response is dropped,
except every ``slip``-th one, which is sent truncated (TC=1, no records): a real client
then retries over TCP, which cannot be spoofed, so it is never locked out. TCP answers are
never limited. The table of networks is bounded (least recently seen out first).

:class:`ClientNetworks` answers "is this client in these CIDRs" with a bounded memo of
decisions per address string, so the hot path is a dict lookup.

Pure: time is passed in.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from enum import Enum

__all__ = ["ClientNetworks", "RateLimiter", "RateVerdict"]


class ClientNetworks:
    """Membership of client addresses in a set of CIDRs, memoised per address."""

    def __init__(self, cidrs: Iterable[str], memo_size: int = 65_536) -> None:
        self.networks = [ipaddress.ip_network(c, strict=False) for c in cidrs]
        self._memo: dict[str, bool] = {}
        self._memo_size = memo_size

    def __contains__(self, address: str) -> bool:
        known = self._memo.get(address)
        if known is not None:
            return known
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        found = any(ip.version == n.version and ip in n for n in self.networks)
        if len(self._memo) >= self._memo_size:
            self._memo.clear()
        self._memo[address] = found
        return found


class RateVerdict(Enum):
    SEND = "send"
    SLIP = "slip"
    """Over the limit: send a truncated (TC=1) answer so a real client retries over TCP."""
    DROP = "drop"


def _network(address: str, v4_prefix: int, v6_prefix: int) -> bytes:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = v4_prefix if ip.version == 4 else v6_prefix
    packed = int.from_bytes(ip.packed, "big")
    bits = 32 if ip.version == 4 else 128
    return bytes([ip.version]) + (packed >> (bits - prefix)).to_bytes(16, "big")


class RateLimiter:
    """Token buckets per client network."""

    def __init__(
        self,
        responses_per_second: float,
        burst: float | None = None,
        slip: int = 2,
        exempt: Iterable[str] = (),
        ipv4_prefix: int = 24,
        ipv6_prefix: int = 56,
        max_networks: int = 100_000,
    ) -> None:
        self.rate = float(responses_per_second)
        self.burst = float(burst if burst is not None else max(1.0, responses_per_second))
        self.slip = slip
        self.exempt = ClientNetworks(exempt)
        self.v4 = ipv4_prefix
        self.v6 = ipv6_prefix
        self.max_networks = max_networks
        # network -> [tokens, last refill time, responses refused since the last slip]
        self._buckets: OrderedDict[bytes, list[float]] = OrderedDict()
        self.dropped = 0
        self.slipped = 0

    def check(self, address: str, now: float) -> RateVerdict:
        """Whether one more UDP response to ``address`` may go out now."""
        if address in self.exempt:
            return RateVerdict.SEND
        try:
            key = _network(address, self.v4, self.v6)
        except ValueError:
            return RateVerdict.SEND
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_networks:
                self._buckets.popitem(last=False)
            bucket = self._buckets[key] = [self.burst, now, 0.0]
        else:
            self._buckets.move_to_end(key)
            bucket[0] = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
            bucket[1] = now
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return RateVerdict.SEND
        bucket[2] += 1
        if self.slip and bucket[2] >= self.slip:
            bucket[2] = 0
            self.slipped += 1
            return RateVerdict.SLIP
        self.dropped += 1
        return RateVerdict.DROP
