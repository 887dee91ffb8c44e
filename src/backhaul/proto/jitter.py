"""Receive-side statistics of a numbered datagram stream, sans-IO: jitter, loss, reordering.

- Jitter is RFC 3550's interarrival jitter (section 6.4.1, the estimator of appendix A.8):
  for consecutive packets i and j, ``D(i,j) = (Rj - Ri) - (Sj - Si)``, the change in
  transit time, and ``J += (|D| - J) / 16``. Send times come from the sender's clock and
  arrival times from ours: the clocks need not agree, only tick at the same rate. The first
  packet only sets the reference.
- Loss and out-of-order follow iperf3's bookkeeping (so numbers agree with an iperf3 peer):
  sequence numbers start at 1; a jump forward counts the gap as lost; a packet below the
  highest seen is out of order and takes one back from the lost count (it was not lost,
  only late). Duplicates count as out of order, as in iperf3.

Times are seconds as floats, passed in: nothing here reads a clock.
"""

from __future__ import annotations

__all__ = ["DatagramStatistics", "JitterEstimator"]


class JitterEstimator:
    """RFC 3550 interarrival jitter, in seconds."""

    __slots__ = ("_last_transit", "jitter")

    def __init__(self) -> None:
        self.jitter = 0.0
        self._last_transit: float | None = None

    def update(self, sent: float, arrived: float) -> float:
        """Account one packet sent at ``sent`` (sender clock) and received at ``arrived``."""
        transit = arrived - sent
        if self._last_transit is not None:
            d = abs(transit - self._last_transit)
            self.jitter += (d - self.jitter) / 16.0
        self._last_transit = transit
        return self.jitter


class DatagramStatistics:
    """Counters of one received datagram stream (sequence numbers from 1)."""

    __slots__ = ("bytes", "estimator", "highest", "lost", "out_of_order", "received")

    def __init__(self) -> None:
        self.estimator = JitterEstimator()
        self.highest = 0
        self.lost = 0
        self.out_of_order = 0
        self.received = 0
        self.bytes = 0

    @property
    def jitter(self) -> float:
        return self.estimator.jitter

    def update(self, sequence: int, size: int, sent: float, arrived: float) -> None:
        """Account one datagram carrying ``sequence``."""
        self.received += 1
        self.bytes += size
        if sequence > self.highest:
            if sequence > self.highest + 1:
                self.lost += sequence - 1 - self.highest
            self.highest = sequence
        else:
            self.out_of_order += 1
            if self.lost > 0:
                self.lost -= 1
        self.estimator.update(sent, arrived)
