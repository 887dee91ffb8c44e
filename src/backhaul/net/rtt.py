"""Round-trip times: probe accounting and the statistics ping and trace print. Pure.

- :func:`summarize` gives min/avg/max/mdev the way iputils ``ping`` computes them
  (mdev is the population standard deviation, ``sqrt(mean(x²) - mean(x)²)``).
- :class:`EchoLedger` keeps the books of one ping target: which sequence numbers went out
  when, which came back (matched by sequence, the caller matches the id), which came back
  twice (duplicates) or after their deadline (late), and which drew an ICMP error.
- :func:`aggregate_hops` folds rounds of single-probe traces into an mtr-style report
  (loss, last, average, best, worst, standard deviation per hop).

Times are seconds as floats; ``now`` is always passed in.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "EchoLedger",
    "HopSample",
    "HopStats",
    "PingStatistics",
    "ReplyKind",
    "RttSummary",
    "Verdict",
    "aggregate_hops",
    "loss_percent",
    "median",
    "summarize",
]


@dataclass(frozen=True, slots=True)
class RttSummary:
    """min/avg/max/mdev of some round-trip times, in seconds."""

    count: int
    min: float
    avg: float
    max: float
    mdev: float


def summarize(samples: Sequence[float]) -> RttSummary | None:
    """iputils' statistics of ``samples``; ``None`` when there are none."""
    if not samples:
        return None
    n = len(samples)
    avg = math.fsum(samples) / n
    square_mean = math.fsum(x * x for x in samples) / n
    mdev = math.sqrt(max(square_mean - avg * avg, 0.0))
    return RttSummary(n, min(samples), avg, max(samples), mdev)


def median(samples: Sequence[float]) -> float | None:
    """The median, ``None`` for no samples."""
    if not samples:
        return None
    ordered = sorted(samples)
    mid = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[mid]
    return (ordered[mid - 1] + ordered[mid]) / 2


def loss_percent(sent: int, received: int) -> float:
    """Packet loss in percent; 0 when nothing was sent."""
    if sent <= 0:
        return 0.0
    return max(sent - received, 0) * 100.0 / sent


class ReplyKind(Enum):
    """What a reply meant to the ledger."""

    REPLY = "reply"
    DUPLICATE = "duplicate"
    LATE = "late"
    UNKNOWN = "unknown"  # a sequence number we never sent (or forgot long ago)


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: ReplyKind
    rtt: float | None


@dataclass(frozen=True, slots=True)
class PingStatistics:
    """The summary of one target, in iputils' terms plus late replies."""

    transmitted: int
    received: int
    duplicates: int
    late: int
    errors: int
    loss_percent: float
    rtt: RttSummary | None
    rtts: tuple[float, ...]


@dataclass
class _Probe:
    sent_at: float
    deadline: float
    answered: bool = False
    errored: bool = False


@dataclass
class EchoLedger:
    """The books of one ping target.

    A reply counts as received when it arrives by ``sent + timeout``; after that it is late
    (counted, but neither received nor in the RTT statistics, since by then the probe has
    been given up). A second reply for the same sequence is a duplicate. Sequence numbers
    are 16 bits on the wire, so the ledger keeps only the newest probe for each.
    """

    timeout: float
    _probes: dict[int, _Probe] = field(default_factory=dict)
    transmitted: int = 0
    received: int = 0
    duplicates: int = 0
    late: int = 0
    errors: int = 0
    rtts: list[float] = field(default_factory=list)

    def sent(self, seq: int, now: float) -> None:
        """Record that probe ``seq`` went out at ``now``."""
        self._probes[seq & 0xFFFF] = _Probe(now, now + self.timeout)
        self.transmitted += 1

    def reply(self, seq: int, now: float, rtt: float | None = None) -> Verdict:
        """Record a reply for ``seq`` arriving at ``now``.

        ``rtt`` overrides ``now - sent`` when the caller has a better measurement (a
        kernel receive timestamp).
        """
        probe = self._probes.get(seq & 0xFFFF)
        if probe is None:
            return Verdict(ReplyKind.UNKNOWN, None)
        measured = rtt if rtt is not None else now - probe.sent_at
        if probe.answered:
            self.duplicates += 1
            return Verdict(ReplyKind.DUPLICATE, measured)
        probe.answered = True
        # late is judged on the measured time, so a reply stamped in time by the kernel
        # but read a moment after its deadline still counts
        if measured > self.timeout:
            self.late += 1
            return Verdict(ReplyKind.LATE, measured)
        self.received += 1
        self.rtts.append(measured)
        return Verdict(ReplyKind.REPLY, measured)

    def error(self, seq: int) -> bool:
        """Record an ICMP error about ``seq``; ``False`` if we never sent it."""
        probe = self._probes.get(seq & 0xFFFF)
        if probe is None or probe.errored:
            return False
        probe.errored = True
        self.errors += 1
        return True

    def outstanding(self, now: float) -> int:
        """Probes neither answered, errored, nor past their deadline."""
        return sum(
            1
            for p in self._probes.values()
            if not p.answered and not p.errored and now <= p.deadline
        )

    def last_deadline(self) -> float | None:
        """The deadline of the newest probe still waiting, ``None`` when none waits."""
        waiting = [p.deadline for p in self._probes.values() if not (p.answered or p.errored)]
        return max(waiting) if waiting else None

    def statistics(self) -> PingStatistics:
        return PingStatistics(
            transmitted=self.transmitted,
            received=self.received,
            duplicates=self.duplicates,
            late=self.late,
            errors=self.errors,
            loss_percent=loss_percent(self.transmitted, self.received),
            rtt=summarize(self.rtts),
            rtts=tuple(self.rtts),
        )


@dataclass(frozen=True, slots=True)
class HopSample:
    """One probe of one round at one TTL: who answered (if anyone) and how fast."""

    ttl: int
    address: str | None
    rtt: float | None
    reached: bool = False


@dataclass(frozen=True, slots=True)
class HopStats:
    """One line of an mtr-style report. Times in seconds; ``None`` when nothing answered."""

    ttl: int
    addresses: tuple[str, ...]  # most frequent first
    sent: int
    received: int
    loss_percent: float
    last: float | None
    avg: float | None
    best: float | None
    worst: float | None
    stdev: float | None

    @property
    def address(self) -> str | None:
        return self.addresses[0] if self.addresses else None


def aggregate_hops(rounds: Iterable[Sequence[HopSample]]) -> list[HopStats]:
    """Fold rounds of probes into one line per TTL, like ``mtr --report``.

    TTLs beyond the first one at which the destination answered (in any round) are dropped:
    they are the destination again, reached by probes that had more TTL than they needed.
    ``last`` is the newest answered probe's time; stdev is the population standard deviation.
    """
    by_ttl: dict[int, list[HopSample]] = {}
    for samples in rounds:
        for sample in samples:
            by_ttl.setdefault(sample.ttl, []).append(sample)
    reached = [ttl for ttl, ss in by_ttl.items() if any(s.reached for s in ss)]
    limit = min(reached) if reached else None
    report: list[HopStats] = []
    for ttl in sorted(by_ttl):
        if limit is not None and ttl > limit:
            break
        samples = by_ttl[ttl]
        answered = [s for s in samples if s.rtt is not None]
        rtts = [s.rtt for s in answered if s.rtt is not None]
        counts = Counter(s.address for s in answered if s.address is not None)
        addresses = tuple(a for a, _ in counts.most_common())
        stats = summarize(rtts)
        report.append(
            HopStats(
                ttl=ttl,
                addresses=addresses,
                sent=len(samples),
                received=len(rtts),
                loss_percent=loss_percent(len(samples), len(rtts)),
                last=rtts[-1] if rtts else None,
                avg=stats.avg if stats else None,
                best=stats.min if stats else None,
                worst=stats.max if stats else None,
                stdev=stats.mdev if stats else None,
            )
        )
    return report
