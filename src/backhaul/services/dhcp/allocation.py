"""Which address a client gets: the lease table and the allocation policy (sans-IO).

The table holds one :class:`~backhaul.services.dhcp.lease.Lease` per address that was ever
handed out (bounded by the pools' sizes) and an index from (subnet, client) to its address.
The policy, in order (RFC 2131 §4.3.1):

1. the client's own lease in this subnet (bound, offered, released or expired) — so a client
   gets the same address back, also after a restart;
2. its reservation;
3. the address it asked for (option 50), when in a pool and not held or reserved for another;
4. an address never handed out (a cursor walks each pool once);
5. the address whose lease ended longest ago (released or expired ones are reclaimed last).

An address is *held* while it is offered (for the offer hold), bound (until it expires) or
declined (for the quarantine); a held address never goes to another client.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from backhaul.services.dhcp.lease import Lease, LeaseEvent, LeaseState

__all__ = ["LeaseTable", "PoolPlan"]


@dataclass(frozen=True)
class PoolPlan:
    """What the allocator needs of a subnet: its name, pools and reserved addresses."""

    name: str
    pools: tuple[tuple[int, int], ...]
    reserved: dict[int, str] = field(default_factory=dict)  # address -> client key
    reservations: dict[str, int] = field(default_factory=dict)  # client key -> address

    def in_pool(self, address: int) -> bool:
        return any(first <= address <= last for first, last in self.pools)

    @property
    def size(self) -> int:
        return sum(last - first + 1 for first, last in self.pools)


class LeaseTable:
    """Every lease the server knows, by address, and each client's address per subnet."""

    def __init__(self) -> None:
        self.leases: dict[int, Lease] = {}
        self._clients: dict[tuple[str, str], int] = {}
        self._cursor: dict[tuple[str, int], int] = {}  # (subnet, pool index) -> next address
        # subnet -> until when it is known to be full (the earliest end of a hold), so a
        # flood of DISCOVERs on a full pool does not scan every lease each time
        self._full_until: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self.leases)

    def __iter__(self) -> Iterator[Lease]:
        return iter(self.leases.values())

    def get(self, address: int) -> Lease | None:
        return self.leases.get(address)

    def of_client(self, subnet: str, client: str) -> Lease | None:
        address = self._clients.get((subnet, client))
        if address is None:
            return None
        lease = self.leases.get(address)
        if lease is None or lease.client != client:
            return None
        return lease

    def restore(self, lease: Lease) -> None:
        """Put back a lease read from the store (the newest record per address wins)."""
        old = self.leases.get(lease.address)
        if old is not None and old.client:
            self._unindex(old)
        self.leases[lease.address] = lease
        if lease.client and lease.state is not LeaseState.DECLINED:
            self._clients[(lease.subnet, lease.client)] = lease.address

    def settle(self, lease: Lease, now: float) -> Lease:
        """Apply the clock: an offer past its hold, a lease past its end, a quarantine that
        is over each take the ``expire`` event."""
        if lease.effective_state(now) is not lease.state:
            lease.move(LeaseEvent.EXPIRE)
            if lease.state is LeaseState.FREE:
                self._unindex(lease)
                lease.client = ""
        return lease

    def assign(self, lease: Lease, client: str) -> None:
        """``lease`` now belongs to ``client`` (reclaimed from its previous owner if any)."""
        if lease.client == client:
            self._clients[(lease.subnet, client)] = lease.address
            return
        if lease.client:
            self._unindex(lease)
            if lease.state is not LeaseState.FREE:
                lease.move(LeaseEvent.RECLAIM)
        old = self.of_client(lease.subnet, client)
        if old is not None and old is not lease and old.state is not LeaseState.BOUND:
            # the client moves: its old, unbound address goes back to the pool
            self.freed(old.subnet)
            self._unindex(old)
            old.client = ""
            if old.state is not LeaseState.FREE:
                old.move(
                    LeaseEvent.RECLAIM
                    if old.state is not LeaseState.OFFERED
                    else LeaseEvent.RELEASE
                )
        lease.client = client
        lease.mac = lease.client_id = lease.hostname = ""
        self._clients[(lease.subnet, client)] = lease.address

    def forget_client(self, lease: Lease) -> None:
        """``lease``'s client no longer points at it (after a DECLINE)."""
        self._unindex(lease)

    def freed(self, subnet: str) -> None:
        """An address of ``subnet`` stopped being held before its time (a RELEASE, an offer
        the client turned down): the subnet may no longer be full."""
        self._full_until.pop(subnet, None)

    def _unindex(self, lease: Lease) -> None:
        key = (lease.subnet, lease.client)
        if self._clients.get(key) == lease.address:
            del self._clients[key]

    def lease_for(self, plan: PoolPlan, address: int) -> Lease:
        lease = self.leases.get(address)
        if lease is None:
            lease = Lease(address=address, subnet=plan.name)
            self.leases[address] = lease
        return lease

    def available(self, plan: PoolPlan, address: int, client: str, now: float) -> bool:
        """``address`` may go to ``client`` now: in a pool or reserved for it, not held by
        another client, not reserved for another."""
        owner = plan.reserved.get(address)
        if owner is not None and owner != client:
            return False
        if owner is None and not plan.in_pool(address):
            return False
        lease = self.leases.get(address)
        if lease is None:
            return True
        self.settle(lease, now)
        if lease.client == client and lease.state is not LeaseState.DECLINED:
            return True
        return not lease.held(now)

    def choose(self, plan: PoolPlan, client: str, requested: int | None, now: float) -> int | None:
        """The address to offer ``client`` (see the module docstring), or ``None`` when the
        subnet has nothing left."""
        own = self.of_client(plan.name, client)
        if own is not None:
            self.settle(own, now)
            reserved_for = plan.reservations.get(client)
            if (
                own.client == client
                and own.state is not LeaseState.DECLINED
                and (reserved_for is None or reserved_for == own.address)
                and (plan.in_pool(own.address) or reserved_for == own.address)
            ):
                return own.address
        reserved = plan.reservations.get(client)
        if reserved is not None:
            lease = self.leases.get(reserved)
            if lease is None or lease.client == client or not lease.held(now):
                return reserved
        if requested is not None and self.available(plan, requested, client, now):
            return requested
        for index, (first, last) in enumerate(plan.pools):
            key = (plan.name, index)
            address = self._cursor.get(key, first)
            while address <= last:
                if address not in self.leases and address not in plan.reserved:
                    self._cursor[key] = address + 1
                    return address
                address += 1
            self._cursor[key] = address
        if now < self._full_until.get(plan.name, 0.0):
            return None
        best: Lease | None = None
        earliest = float("inf")
        for lease in self.leases.values():
            if lease.subnet != plan.name or lease.address in plan.reserved:
                continue
            if not plan.in_pool(lease.address):
                continue
            self.settle(lease, now)
            if lease.held(now):
                earliest = min(earliest, lease.expires)
                continue
            if best is None or lease.expires < best.expires:
                best = lease
        if best is None:
            self._full_until[plan.name] = earliest
            return None
        return best.address

    def in_use(self, now: float) -> dict[str, int]:
        """How many addresses each subnet holds now (for the pool-use metric), in one pass."""
        counts: dict[str, int] = {}
        for lease in self.leases.values():
            if lease.held(now):
                counts[lease.subnet] = counts.get(lease.subnet, 0) + 1
        return counts
