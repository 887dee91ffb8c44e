"""Loading a config: YAML text -> validated :class:`EdgeConfig`, or one ``ConfigError``.

Every way a config can be wrong ends as ``ConfigError(source, problems)`` where each problem
is ``(path, message)``: ``path`` is the dotted config path (``routes[3].match.path``,
``clusters.api.endpoints[2].address``) and the message says what was found, what was
expected, and where in the file (``line 12``). Neither a pydantic ``ValidationError`` nor a
YAML error escapes this module.

The YAML dialect is YAML 1.2's core schema, which is what people expect: only
``true``/``false`` are booleans (``no``, ``on``, ``NO`` stay strings), no sexagesimal
integers (``1:30``), no implicit timestamps; duplicate keys are an error.
"""

from __future__ import annotations

import difflib
import re
import types
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from backhaul.config.model import (
    CONFIG_DIR,
    Admin,
    Cluster,
    EdgeConfig,
    Listener,
    Problems,
    Route,
    cross_check_parts,
    default_names,
    route_retries,
)
from backhaul.config.units import describe
from backhaul.errors import ConfigError

__all__ = [
    "MAX_CONFIG_BYTES",
    "load_bytes",
    "load_data",
    "load_file",
    "load_text",
    "parse_yaml",
    "read_config_bytes",
]

#: Larger files are refused: a config is text written by people.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: Aliases may not expand a document past this many nodes ("billion laughs").
MAX_NODES = 200_000

M = TypeVar("M", bound=BaseModel)

_TOP_EXPECTED = "expected a mapping with the keys listeners, routes and clusters"

# --------------------------------------------------------------------------- YAML dialect


def _make_loader(base: type[yaml.SafeLoader]) -> type[yaml.SafeLoader]:
    """``base`` (libyaml's CSafeLoader when present) with YAML 1.2 core-schema scalars."""
    loader: type[yaml.SafeLoader] = type("_Loader", (base,), {})
    loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag.rsplit(":", 1)[-1] in ("null", "merge")]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool",
        re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
        list("tTfF"),
    )
    loader.add_implicit_resolver(
        "tag:yaml.org,2002:int",
        re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0x[0-9a-fA-F]+)$"),
        list("-+0123456789"),
    )
    loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(
            r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
            r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
        ),
        list("-+.0123456789"),
    )
    return loader


_Loader = _make_loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _yaml_problem(exc: yaml.YAMLError, source_text: str) -> str:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        what = exc.problem or "invalid YAML"
        message = f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: {what}"
        if exc.context:
            message += f" ({exc.context}"
            if exc.context_mark is not None and exc.context_mark.line != mark.line:
                message += f" at line {exc.context_mark.line + 1}"
            message += ")"
        lines = source_text.split("\n")
        if mark.line < len(lines) and lines[mark.line][mark.column : mark.column + 1] == "\t":
            message += "; YAML indents with spaces, not tabs"
        return message
    return f"YAML error: {exc}"


def parse_yaml(text: str, source: str) -> tuple[Any, Node | None]:
    """Parse YAML ``text`` into plain data and its node tree (for line numbers).

    Raises ConfigError for syntax errors (with line and column), duplicate keys, unknown
    tags, and alias bombs.
    """
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        problems = _check_nodes(node)
        if problems:
            raise ConfigError(source, problems)
        data = loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(source, [("", _yaml_problem(exc, text))]) from exc
    except RecursionError as exc:  # the pure-Python parser has no depth limit of its own
        raise ConfigError(
            source, [("", "found values nested too deeply: expected a config of human size")]
        ) from exc
    finally:
        loader.dispose()
    return data, node


def _check_nodes(root: Node) -> list[tuple[str, str]]:
    """Duplicate keys (with paths) and documents that aliases blow up."""
    problems: list[tuple[str, str]] = []
    count = 0
    stack: list[tuple[Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        count += 1
        if count > MAX_NODES:
            return [
                (
                    "",
                    f"found more than {MAX_NODES} values once aliases are expanded:"
                    " expected a config of human size",
                )
            ]
        if isinstance(node, MappingNode):
            seen: dict[object, int] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, ScalarNode) else None
                if key == "<<" or key is None:
                    stack.append((value_node, path))
                    continue
                child = _join(path, key)
                if key in seen:
                    problems.append(
                        (
                            child,
                            f"found the key {key!r} twice (lines {seen[key] + 1} and"
                            f" {key_node.start_mark.line + 1}): expected each key once",
                        )
                    )
                else:
                    seen[key] = key_node.start_mark.line
                stack.append((value_node, child))
        elif isinstance(node, SequenceNode):
            stack.extend((item, f"{path}[{i}]") for i, item in enumerate(node.value))
    problems.sort()
    return problems


# --------------------------------------------------------------------------- paths

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(path: str, key: object) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    if not _PLAIN_KEY.fullmatch(text):
        text = repr(text)
        return f"{path}[{text}]" if path else f"[{text}]"
    return f"{path}.{text}" if path else text


def format_loc(loc: tuple[int | str, ...]) -> str:
    """``("routes", 3, "match", "path")`` -> ``routes[3].match.path``."""
    path = ""
    for part in loc:
        if part == "[key]":
            continue
        path = _join(path, part)
    return path


def _line(root: Node | None, loc: tuple[int | str, ...]) -> int:
    """The 0-based line of the deepest YAML key or item along ``loc``; -1 if unknown."""
    node = root
    line = -1 if root is None else root.start_mark.line
    for part in loc:
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if isinstance(key_node, ScalarNode) and key_node.value == str(part):
                    node, line = value_node, key_node.start_mark.line
                    break
            else:
                return line
        elif isinstance(node, SequenceNode) and isinstance(part, int):
            if not 0 <= part < len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line
        else:
            return line
    return line


def _with_line(message: str, line: int) -> str:
    return message if line < 0 else f"{message} (line {line + 1})"


# --------------------------------------------------------------------------- messages


def _unwrap(annotation: Any) -> list[Any]:
    """The non-None members of a union annotation, or the annotation itself."""
    origin = get_origin(annotation)
    if origin is Union or origin is types.UnionType:
        return [a for a in get_args(annotation) if a is not type(None)]
    return [annotation]


def _model_for(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    current: Any = EdgeConfig
    i = 0
    while i < len(loc):
        members = _unwrap(current)
        if len(members) != 1:
            return None
        current = members[0]
        part = loc[i]
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
            i += 1
            continue
        origin = get_origin(current)
        args = get_args(current)
        if origin in (tuple, list) and args:
            current = args[0]
            i += 1
        elif origin is dict and len(args) == 2:
            current = args[1]
            i += 1
        else:
            return None
    members = _unwrap(current)
    current = members[0] if len(members) == 1 else None
    if get_origin(current) is None and isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


def _unknown_key(loc: tuple[int | str, ...]) -> str:
    key = str(loc[-1])
    model = _model_for(loc[:-1])
    if model is None:
        return f"found the unknown key {key!r}"
    names = list(model.model_fields)
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        hint = f"did you mean {close[0]!r}? expected one of: {', '.join(names)}"
    else:
        hint = f"expected one of: {', '.join(names)}"
    return f"found the unknown key {key!r}: {hint}"


_EXPECTED = {
    "string_type": "expected a string",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "model_type": "expected a mapping (key: value lines)",
    "model_attributes_type": "expected a mapping (key: value lines)",
    "dict_type": "expected a mapping (key: value lines)",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
}


def _message(err: Any) -> str:
    kind: str = err["type"]
    loc: tuple[int | str, ...] = tuple(err["loc"])
    ctx: dict[str, Any] = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        return _unknown_key(loc)
    if kind == "missing":
        return f"found nothing: expected the required key {str(loc[-1])!r}"
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    found = f"found {describe(value)}"
    if kind == "string_type" and isinstance(value, bool | int | float) and value is not None:
        return f"{found}: expected a string (put it in quotes)"
    if kind in _EXPECTED:
        return f"{found}: {_EXPECTED[kind]}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "one of the listed values"))
        choices = re.findall(r"'([^']*)'", expected)
        close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close and isinstance(value, str) else ""
        return f"{found}: expected {expected}{hint}"
    if kind == "too_short":
        what = {"listeners": "listener", "endpoints": "endpoint"}.get(str(loc[-1]), "item")
        n = len(value) if isinstance(value, list | tuple | dict) else 0
        found = "found an empty list" if n == 0 else f"found {n} item(s)"
        return f"{found}: expected at least {ctx.get('min_length', 1)} {what}"
    if kind == "string_too_short":
        return f"{found}: expected a non-empty string"
    for key, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        if key in ctx:
            return f"{found}: expected a number {sign} {ctx[key]}"
    return f"{found}: {err.get('msg', 'invalid value')}"


def _problems(exc: ValidationError, root: Node | None) -> list[tuple[int, str, str]]:
    """One ``(line, path, message)`` per error."""
    problems: list[tuple[int, str, str]] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        ctx = err.get("ctx") or {}
        if err["type"] == "too_short":
            value = err.get("input")
            if isinstance(value, list | tuple | dict) and len(value) >= ctx.get("min_length", 1):
                continue  # items failed on their own; those errors say why
        error = ctx.get("error")
        if isinstance(error, Problems):
            for sub, message in error.problems:
                sub_loc = loc + _split(sub)
                line = _line(root, sub_loc)
                problems.append((line, format_loc(sub_loc), _with_line(message, line)))
            continue
        line = _line(root, loc)
        problems.append((line, format_loc(loc), _with_line(_message(err), line)))
    return problems


def _valid(model: type[M], value: object) -> M | None:
    try:
        return model.model_validate(value)
    except ValidationError:
        return None


def _between_parts(data: dict[str, Any], root: Node | None) -> list[tuple[int, str, str]]:
    """The cross-checks (names, overlapping addresses, references, merged retries) over the
    parts of a config that failed as a whole: each listener, route, cluster and the admin
    block validated on its own, the ones that fail left out. So one bad part (a duplicate
    endpoint, a port out of range) does not hide the problems between the others."""
    named = default_names(data)
    raw_listeners = named.get("listeners")
    raw_listeners = raw_listeners if isinstance(raw_listeners, list | tuple) else []
    raw_routes = named.get("routes")
    raw_routes = raw_routes if isinstance(raw_routes, list | tuple) else []
    raw_clusters = named.get("clusters")
    raw_clusters = raw_clusters if isinstance(raw_clusters, dict) else {}
    listeners = [_valid(Listener, item) for item in raw_listeners]
    names = [item.get("name") if isinstance(item, dict) else None for item in raw_listeners]
    routes = [_valid(Route, item) for item in raw_routes]
    clusters = {str(name): _valid(Cluster, item) for name, item in raw_clusters.items()}
    admin = _valid(Admin, named["admin"]) if named.get("admin") is not None else None
    found = cross_check_parts(listeners, routes, clusters, admin, names)
    found += route_retries(routes, clusters)[1]
    out: list[tuple[int, str, str]] = []
    for path, message in found:
        line = _line(root, _split(path))
        out.append((line, path, _with_line(message, line)))
    return out


_PART = re.compile(r"\.?([A-Za-z0-9_-]+)|\[(\d+)\]")


def _split(path: str) -> tuple[int | str, ...]:
    """``routes[2].proxy.cluster`` -> ``("routes", 2, "proxy", "cluster")``."""
    parts: list[int | str] = []
    for name, index in _PART.findall(path):
        parts.append(int(index) if index else name)
    return tuple(parts)


# --------------------------------------------------------------------------- entry points


def load_data(
    data: object, source: str, root: Node | None = None, folder: str | None = None
) -> EdgeConfig:
    """Validate already-parsed data (a dict, as from YAML) into an :class:`EdgeConfig`.

    ``folder`` is where the config file is: relative paths in it (``access_log.path``) are
    resolved against it. Without one they stay as written.
    """
    if data is None:
        raise ConfigError(source, [("", f"found an empty document: {_TOP_EXPECTED}")])
    if not isinstance(data, dict):
        raise ConfigError(source, [("", f"found {describe(data)}: {_TOP_EXPECTED}")])
    try:
        return EdgeConfig.model_validate(data, context={CONFIG_DIR: folder})
    except ValidationError as exc:
        problems = _problems(exc, root) + _between_parts(data, root)
        unique = dict.fromkeys(problems)  # a failed cross-check is found both ways
        ordered = sorted(unique, key=lambda item: item[0])
        raise ConfigError(source, [(path, message) for _, path, message in ordered]) from exc


def load_text(text: str, source: str = "<text>", folder: str | None = None) -> EdgeConfig:
    """Parse and validate YAML ``text``; ``source`` names it in errors; ``folder`` as for
    :func:`load_data`."""
    data, root = parse_yaml(text, source)
    return load_data(data, source, root, folder)


def read_config_bytes(path: str | Path) -> bytes:
    """The bytes of the config file at ``path`` (at most :data:`MAX_CONFIG_BYTES`), or a
    ``ConfigError`` that says why they cannot be read."""
    source = str(path)
    file = Path(path)
    hint = "expected a YAML config file (`backhaul config default > edge.yaml` writes one)"
    try:
        with file.open("rb") as stream:
            raw = stream.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError as exc:
        raise ConfigError(source, [("", f"found no such file: {hint}")]) from exc
    except IsADirectoryError as exc:
        raise ConfigError(source, [("", f"found a directory: {hint}")]) from exc
    except PermissionError as exc:
        raise ConfigError(
            source, [("", "found a file this user may not read: check its permissions")]
        ) from exc
    except OSError as exc:
        raise ConfigError(source, [("", f"cannot read it ({exc.strerror}): {hint}")]) from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(
            source, [("", f"found a file over {MAX_CONFIG_BYTES} bytes: expected a config file")]
        )
    return raw


def load_bytes(raw: bytes, source: str, folder: str | None = None) -> EdgeConfig:
    """Decode (UTF-8, a BOM allowed), parse and validate the bytes of a config file;
    ``source`` and ``folder`` as for :func:`load_text`."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            source,
            [("", f"found bytes that are not UTF-8 at offset {exc.start}: expected UTF-8 text")],
        ) from exc
    return load_text(text, source, folder)


def load_file(path: str | Path) -> EdgeConfig:
    """Read, parse and validate the YAML config at ``path``."""
    raw = read_config_bytes(path)
    return load_bytes(raw, str(path), str(Path(path).absolute().parent))
