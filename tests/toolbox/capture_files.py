"""Capture files the capture tests write for themselves (with dpkt), and tshark's view of them.

``write_mixed(path)`` builds one file with everything the summaries must get right:
handshakes and data both ways, a port pair reused with a new ISN (a new conversation), a
SYN retransmitted with the same ISN (not a new one), data retransmissions, an out-of-order
segment, a conversation seen without its SYN, HTTP/1.1 exchanges (one pipelined, one
chunked), DNS queries with and without answers, IPv6 TCP and UDP, a VLAN-tagged frame, ARP.
"""

from __future__ import annotations

import socket
import subprocess
from collections import Counter
from pathlib import Path

import dns.message
import dns.rrset
import dpkt

MAC_A = b"\x02\x00\x00\x00\x00\x0a"
MAC_B = b"\x02\x00\x00\x00\x00\x0b"


def ether(payload: bytes, v6: bool = False, vlan: int | None = None) -> bytes:
    kind = dpkt.ethernet.ETH_TYPE_IP6 if v6 else dpkt.ethernet.ETH_TYPE_IP
    if vlan is not None:
        tag = (0x8100).to_bytes(2, "big") + vlan.to_bytes(2, "big")
        return MAC_B + MAC_A + tag + kind.to_bytes(2, "big") + payload
    return bytes(dpkt.ethernet.Ethernet(dst=MAC_B, src=MAC_A, type=kind, data=payload))


def ip_packet(src: str, dst: str, proto: int, transport: bytes) -> bytes:
    if ":" in src:
        ip6 = dpkt.ip6.IP6(
            src=socket.inet_pton(socket.AF_INET6, src),
            dst=socket.inet_pton(socket.AF_INET6, dst),
            nxt=proto, hlim=64, plen=len(transport),
        )  # fmt: skip
        return bytes(ip6) + transport
    ip = dpkt.ip.IP(src=socket.inet_aton(src), dst=socket.inet_aton(dst), p=proto, ttl=64)
    ip.data = transport
    ip.len = 20 + len(transport)
    return bytes(ip)


def tcp_frame(src: str, dst: str, sport: int, dport: int, seq: int, ack: int, flags: int,
              data: bytes = b"", vlan: int | None = None) -> bytes:  # fmt: skip
    segment = dpkt.tcp.TCP(
        sport=sport, dport=dport, seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF,
        flags=flags, win=65535, data=data,
    )  # fmt: skip
    return ether(ip_packet(src, dst, 6, bytes(segment)), v6=":" in src, vlan=vlan)


def udp_frame(src: str, dst: str, sport: int, dport: int, data: bytes) -> bytes:
    datagram = dpkt.udp.UDP(sport=sport, dport=dport, data=data)
    datagram.ulen = 8 + len(data)
    return ether(ip_packet(src, dst, 17, bytes(datagram)), v6=":" in src)


SYN, ACK, PSH, FIN = dpkt.tcp.TH_SYN, dpkt.tcp.TH_ACK, dpkt.tcp.TH_PUSH, dpkt.tcp.TH_FIN


class Recorder:
    """Frames with increasing times (1 ms apart unless told)."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, bytes]] = []
        self.t = 1_700_000_000.0

    def add(self, frame: bytes, gap: float = 0.001) -> None:
        self.t += gap
        self.frames.append((self.t, frame))

    def write(self, path: Path, nano: bool = False) -> Path:
        with open(path, "wb") as fh:
            writer = dpkt.pcap.Writer(fh, nano=nano)
            for t, frame in self.frames:
                writer.writepkt(frame, ts=t)
        return path

    def write_pcapng(self, path: Path) -> Path:
        with open(path, "wb") as fh:
            writer = dpkt.pcapng.Writer(fh)
            for t, frame in self.frames:
                writer.writepkt(frame, ts=t)
        return path


def connection(rec: Recorder, client: str, server: str, cport: int, sport: int, isn: int,
               exchanges: list[tuple[bytes, bytes]], *, handshake: bool = True,
               retransmit_first: bool = False, close: bool = True) -> None:  # fmt: skip
    """One TCP connection: handshake, request/response exchanges, close."""
    c, s = isn, 900_000 + isn
    if handshake:
        rec.add(tcp_frame(client, server, cport, sport, c, 0, SYN))
        rec.add(tcp_frame(server, client, sport, cport, s, c + 1, SYN | ACK), gap=0.004)
        rec.add(tcp_frame(client, server, cport, sport, c + 1, s + 1, ACK))
    c, s = c + 1, s + 1
    for i, (request, response) in enumerate(exchanges):
        rec.add(tcp_frame(client, server, cport, sport, c, s, ACK | PSH, request))
        if retransmit_first and i == 0:
            rec.add(tcp_frame(client, server, cport, sport, c, s, ACK | PSH, request), gap=0.2)
        c += len(request)
        # the response in two segments, acknowledged at the end
        half = len(response) // 2
        rec.add(tcp_frame(server, client, sport, cport, s, c, ACK, response[:half]), gap=0.003)
        rec.add(tcp_frame(server, client, sport, cport, s + half, c, ACK | PSH, response[half:]))
        s += len(response)
        rec.add(tcp_frame(client, server, cport, sport, c, s, ACK))
    if close:
        rec.add(tcp_frame(client, server, cport, sport, c, s, FIN | ACK))
        rec.add(tcp_frame(server, client, sport, cport, s, c + 1, FIN | ACK))
        rec.add(tcp_frame(client, server, cport, sport, c + 1, s + 1, ACK))


def dns_exchange(rec: Recorder, client: str, server: str, cport: int, name: str, answer: str | None,
                 delay: float) -> None:  # fmt: skip
    query = dns.message.make_query(name, "A")
    rec.add(udp_frame(client, server, cport, 53, query.to_wire()))
    if answer is None:
        return
    response = dns.message.make_response(query)
    response.answer.append(dns.rrset.from_text(name, 60, "IN", "A", answer))
    rec.add(udp_frame(server, client, 53, cport, response.to_wire()), gap=delay)


def write_mixed(path: Path) -> Path:
    rec = Recorder()
    get = b"GET /a HTTP/1.1\r\nHost: example.test\r\n\r\n"
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world"
    get2 = b"GET /b?x=1 HTTP/1.1\r\nHost: example.test\r\n\r\n"
    chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nnope!\r\n0\r\n\r\n"
    post = b"POST /submit HTTP/1.1\r\nHost: api.test\r\nContent-Length: 4\r\n\r\nabcd"
    created = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    connection(rec, "192.0.2.1", "192.0.2.80", 40001, 80, 1000, [(get, ok), (get2, chunked)])
    # the same port pair again with a new ISN: a new conversation
    connection(rec, "192.0.2.1", "192.0.2.80", 40001, 80, 555_555, [(post, created)],
               retransmit_first=True)  # fmt: skip
    # a SYN retransmitted with the same ISN is the same conversation
    rec.add(tcp_frame("192.0.2.2", "192.0.2.80", 40002, 8080, 77, 0, SYN))
    rec.add(tcp_frame("192.0.2.2", "192.0.2.80", 40002, 8080, 77, 0, SYN), gap=1.0)
    rec.add(tcp_frame("192.0.2.80", "192.0.2.2", 8080, 40002, 5000, 78, SYN | ACK))
    rec.add(tcp_frame("192.0.2.2", "192.0.2.80", 40002, 8080, 78, 5001, ACK))
    # seen mid-stream: no SYN at all
    connection(rec, "192.0.2.3", "192.0.2.81", 40003, 9000, 42, [(b"ping\n", b"pong\n")],
               handshake=False)  # fmt: skip
    # IPv6 with a VLAN-free path, and a VLAN-tagged IPv4 frame
    connection(rec, "2001:db8::1", "2001:db8::80", 40004, 80, 9999, [(get, ok)])
    rec.add(tcp_frame("192.0.2.4", "192.0.2.80", 40005, 443, 1, 0, SYN, vlan=7))
    # DNS: answered after 2.5 ms and 40 ms, one never answered
    dns_exchange(rec, "192.0.2.1", "192.0.2.53", 50001, "www.example.test.", "192.0.2.80", 0.0025)
    dns_exchange(rec, "192.0.2.2", "192.0.2.53", 50002, "api.example.test.", "192.0.2.81", 0.040)
    dns_exchange(rec, "192.0.2.3", "192.0.2.53", 50003, "lost.example.test.", None, 0.0)
    rec.add(udp_frame("2001:db8::1", "2001:db8::53", 50004, 5353, b"\x00" * 12))
    # ARP
    arp = dpkt.arp.ARP(
        sha=MAC_A, spa=socket.inet_aton("192.0.2.1"), tpa=socket.inet_aton("192.0.2.80")
    )
    rec.add(bytes(dpkt.ethernet.Ethernet(dst=b"\xff" * 6, src=MAC_A, type=0x0806, data=arp)))
    return rec.write(path)


def tshark_fields(
    path: Path, fields: list[str], display_filter: str | None = None
) -> list[list[str]]:
    argv = ["tshark", "-n", "-r", str(path), "-T", "fields"]
    for f in fields:
        argv += ["-e", f]
    if display_filter:
        argv += ["-Y", display_filter]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return [line.split("\t") for line in done.stdout.splitlines()]


def tshark_stats(path: Path, *stats: str) -> str:
    argv = ["tshark", "-n", "-r", str(path), "-q"]
    for s in stats:
        argv += ["-z", s]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout


def tshark_streams(path: Path, proto: str) -> dict[int, tuple[int, int]]:
    """tshark's {stream index: (frames, bytes)} for ``tcp`` or ``udp``."""
    frames: Counter[int] = Counter()
    sizes: Counter[int] = Counter()
    for stream, length in tshark_fields(path, [f"{proto}.stream", "frame.len"], proto):
        if stream:
            frames[int(stream)] += 1
            sizes[int(stream)] += int(length)
    return {k: (frames[k], sizes[k]) for k in frames}
