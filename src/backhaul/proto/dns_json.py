"""DNS messages as JSON, in the shape of RFC 8427 ("Representing DNS Messages in JSON").

Pure: takes dnspython messages (and, for the date members, a timestamp the caller read) and
returns plain dicts ready for :func:`json.dumps`. The codec itself is dnspython's; nothing
here parses wire bytes beyond the 12-byte header counts.

Shape (RFC 8427 §2.1-§2.5, §3):

- A **message object** has the header members ``ID``, ``QR``, ``Opcode``, ``AA``, ``TC``,
  ``RD``, ``RA``, ``AD``, ``CD``, ``RCODE`` (flags as 0/1 integers, as in the RFC's
  examples), the counts ``QDCOUNT``, ``ANCOUNT``, ``NSCOUNT``, ``ARCOUNT`` (as on the wire,
  so ``ARCOUNT`` includes an OPT record), the first question as ``QNAME``, ``QTYPE``,
  ``QTYPEname``, ``QCLASS``, ``QCLASSname``, the sections ``questionRRs``, ``answerRRs``,
  ``authorityRRs``, ``additionalRRs`` (arrays of resource-record objects; the OPT and TSIG
  pseudo-records are listed at the end of ``additionalRRs``), ``messageOctetsHEX`` (the
  whole message in upper-case base16) and, when a time is given, ``dateString`` (RFC 3339)
  and ``dateSeconds``.
- A **resource-record object** has ``NAME`` (presentation format, absolute, with the final
  dot), ``TYPE``, ``TYPEname``, ``CLASS``, ``CLASSname``, ``TTL``, ``RDLENGTH``, ``RDATAHEX``
  and ``rdata<TYPEname>`` (``rdataA``, ``rdataMX``, ...: the RDATA in presentation format;
  RFC 8427 §2.3 names these for common types and backhaul uses the same pattern for every
  type with a mnemonic). Question records carry only ``NAME``, ``TYPE``, ``TYPEname``,
  ``CLASS`` and ``CLASSname``. An OPT record's ``CLASS`` is the UDP payload size and its
  ``TTL`` the extended RCODE/version/flags word (RFC 6891 §6.1.3).
- A **query/response pair** is ``{"queryMessage": {...}, "responseMessage": {...}}``
  (RFC 8427 §3).
"""

from __future__ import annotations

import datetime
import struct
from typing import Any

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

__all__ = [
    "message_to_json",
    "opcode_text",
    "pair_to_json",
    "rcode_text",
    "rdata_to_json",
    "rfc3339",
    "section_counts",
]

_FLAG_MEMBERS = (
    ("AA", dns.flags.AA),
    ("TC", dns.flags.TC),
    ("RD", dns.flags.RD),
    ("RA", dns.flags.RA),
    ("AD", dns.flags.AD),
    ("CD", dns.flags.CD),
)


def rfc3339(seconds: float) -> str:
    """``seconds`` since the epoch as an RFC 3339 UTC timestamp with microseconds."""
    moment = datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _type_name(rdtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))


def _class_name(rdclass: int) -> str:
    return dns.rdataclass.to_text(dns.rdataclass.RdataClass.make(rdclass))


def rdata_to_json(name: dns.name.Name, ttl: int, rdata: dns.rdata.Rdata) -> dict[str, Any]:
    """One resource record (RFC 8427 §2.2, §2.3)."""
    wire = rdata.to_wire()
    assert wire is not None  # to_wire() without a file returns the bytes
    type_name = _type_name(rdata.rdtype)
    record: dict[str, Any] = {
        "NAME": name.to_text(),
        "TYPE": int(rdata.rdtype),
        "TYPEname": type_name,
        "CLASS": int(rdata.rdclass),
        "CLASSname": _class_name(rdata.rdclass),
        "TTL": int(ttl),
        "RDLENGTH": len(wire),
        "RDATAHEX": wire.hex().upper(),
    }
    if not type_name.startswith("TYPE") and rdata.rdtype != dns.rdatatype.OPT:
        record[f"rdata{type_name}"] = rdata.to_text()
    return record


def _section(rrsets: list[dns.rrset.RRset]) -> list[dict[str, Any]]:
    return [rdata_to_json(rrset.name, rrset.ttl, rdata) for rrset in rrsets for rdata in rrset]


def _pseudo(rrset: dns.rrset.RRset) -> list[dict[str, Any]]:
    """OPT/TSIG records, whose CLASS and TTL fields carry other meanings."""
    out = []
    for rdata in rrset:
        wire = rdata.to_wire()
        assert wire is not None
        out.append(
            {
                "NAME": rrset.name.to_text(),
                "TYPE": int(rrset.rdtype),
                "TYPEname": _type_name(rrset.rdtype),
                "CLASS": int(rrset.rdclass),
                "TTL": int(rrset.ttl),
                "RDLENGTH": len(wire),
                "RDATAHEX": wire.hex().upper(),
            }
        )
    return out


def section_counts(
    message: dns.message.Message, wire: bytes | None = None
) -> tuple[int, int, int, int]:
    """QDCOUNT, ANCOUNT, NSCOUNT, ARCOUNT: from the wire header when there is one (so an
    OPT or TSIG record counts in ARCOUNT, as dig shows it), else from the sections."""
    if wire is None:
        wire = getattr(message, "wire", None)
    if wire is not None and len(wire) >= 12:
        _, _, qd, an, ns, ar = struct.unpack("!HHHHHH", wire[:12])
        return qd, an, ns, ar
    extra = (message.opt is not None) + (message.tsig is not None)
    return (
        len(message.question),
        sum(len(r) for r in message.answer),
        sum(len(r) for r in message.authority),
        sum(len(r) for r in message.additional) + extra,
    )


def message_to_json(
    message: dns.message.Message,
    *,
    wire: bytes | None = None,
    date: float | None = None,
    comment: str | None = None,
) -> dict[str, Any]:
    """The RFC 8427 message object for ``message``.

    ``wire`` is the message as sent or received (default: the wire dnspython kept when it
    parsed the message, else a fresh rendering); ``date`` (seconds since the epoch) adds
    ``dateString``/``dateSeconds``; ``comment`` adds RFC 8427's ``comment`` member.
    """
    if wire is None:
        wire = getattr(message, "wire", None)
    if wire is None:
        wire = message.to_wire()
    qd, an, ns, ar = section_counts(message, wire)
    flags = message.flags
    document: dict[str, Any] = {
        "ID": message.id,
        "QR": int(bool(flags & dns.flags.QR)),
        "Opcode": int(message.opcode()),
    }
    for member, bit in _FLAG_MEMBERS:
        document[member] = int(bool(flags & bit))
    document.update(
        {
            "RCODE": int(message.rcode()),
            "QDCOUNT": qd,
            "ANCOUNT": an,
            "NSCOUNT": ns,
            "ARCOUNT": ar,
        }
    )
    if message.question:
        first = message.question[0]
        document.update(
            {
                "QNAME": first.name.to_text(),
                "QTYPE": int(first.rdtype),
                "QTYPEname": _type_name(first.rdtype),
                "QCLASS": int(first.rdclass),
                "QCLASSname": _class_name(first.rdclass),
            }
        )
    document["questionRRs"] = [
        {
            "NAME": q.name.to_text(),
            "TYPE": int(q.rdtype),
            "TYPEname": _type_name(q.rdtype),
            "CLASS": int(q.rdclass),
            "CLASSname": _class_name(q.rdclass),
        }
        for q in message.question
    ]
    document["answerRRs"] = _section(message.answer)
    document["authorityRRs"] = _section(message.authority)
    additional = _section(message.additional)
    if message.opt is not None:
        additional += _pseudo(message.opt)
    if message.tsig is not None:
        additional += _pseudo(message.tsig)
    document["additionalRRs"] = additional
    document["messageOctetsHEX"] = wire.hex().upper()
    if date is not None:
        document["dateString"] = rfc3339(date)
        document["dateSeconds"] = date
    if comment is not None:
        document["comment"] = comment
    return document


def pair_to_json(
    query: dns.message.Message,
    response: dns.message.Message | None,
    *,
    query_wire: bytes | None = None,
    sent_at: float | None = None,
    received_at: float | None = None,
) -> dict[str, Any]:
    """The RFC 8427 §3 query/response pair (``responseMessage`` omitted if none came)."""
    pair: dict[str, Any] = {"queryMessage": message_to_json(query, wire=query_wire, date=sent_at)}
    if response is not None:
        pair["responseMessage"] = message_to_json(response, date=received_at)
    return pair


def rcode_text(message: dns.message.Message) -> str:
    """``NOERROR``, ``NXDOMAIN``... including extended RCODEs carried in OPT."""
    return dns.rcode.to_text(message.rcode())


def opcode_text(message: dns.message.Message) -> str:
    """``QUERY``, ``NOTIFY``..."""
    return dns.opcode.to_text(message.opcode())
