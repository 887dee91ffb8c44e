"""Redirect templates: a route's ``redirect.to``, parsed once at config load.

A template is a URL or path with two placeholders, ``{path}`` (the request's normalised
path) and ``{query}`` (its raw query, without the ``?``); ``{{`` and ``}}`` stand for
literal braces. Anything else in braces (``{pth}``, ``{}``, ``{path!r}``) is refused at
load, so a typo cannot reach a client as a literal ``{pth}`` in a ``Location``.

An empty query leaves no trace: ``{path}?{query}`` gives ``/a`` (not ``/a?``) for a request
without a query, and ``/new?{query}&from=old`` gives ``/new?from=old``.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

__all__ = ["PLACEHOLDERS", "RedirectTemplate", "parse_redirect"]

#: The names a template may use, in braces.
PLACEHOLDERS = ("path", "query")

_FORMATTER = string.Formatter()


@dataclass(frozen=True, slots=True)
class RedirectTemplate:
    """A parsed template: ``parts`` alternates literal text and placeholder names."""

    text: str
    #: ``(literal, placeholder)`` pairs; ``placeholder`` is ``"path"``, ``"query"`` or ``""``
    parts: tuple[tuple[str, str], ...]

    def location(self, path: str, query: str) -> str:
        """The ``Location`` for a request with this ``path`` and raw ``query``."""
        out: list[str] = []
        drop_amp = False  # an empty "?{query}" hands its "?" to a following "&"
        for literal, name in self.parts:
            if drop_amp and literal.startswith("&"):
                literal = "?" + literal[1:]
            drop_amp = False
            if name == "query" and not query and literal.endswith(("?", "&")):
                drop_amp = literal.endswith("?")
                literal = literal[:-1]
            out.append(literal)
            if name == "path":
                out.append(path)
            elif name == "query":
                out.append(query)
        return "".join(out)


def parse_redirect(text: str) -> RedirectTemplate:
    """Parse a redirect template; ValueError (found ...: expected ...) when it has an
    unknown placeholder or an unmatched brace."""
    try:
        fields = list(_FORMATTER.parse(text))
    except ValueError as exc:
        raise ValueError(
            f"found {text!r}, with a brace that opens or closes nothing ({exc}): expected"
            " only {path} and {query} in braces (write {{ or }} for a literal brace)"
        ) from exc
    parts: list[tuple[str, str]] = []
    for literal, name, spec, conversion in fields:
        if name is None:
            parts.append((literal, ""))
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            shown = "{" + name + (f"!{conversion}" if conversion else "")
            shown += (f":{spec}" if spec else "") + "}"
            import difflib  # only to word this error

            close = difflib.get_close_matches(name, PLACEHOLDERS, n=1, cutoff=0.5)
            hint = f"; did you mean {{{close[0]}}}?" if close and not (spec or conversion) else ""
            raise ValueError(
                f"found the placeholder {shown} in {text!r}: expected only {{path}} and"
                f" {{query}} (write {{{{ or }}}} for a literal brace){hint}"
            )
        parts.append((literal, name))
    return RedirectTemplate(text, tuple(parts))
