"""Typed admin handlers, their dispatch, and the OpenAPI 3.1 document made from them.

A handler is an ``async def`` declared with :meth:`Router.route`: its path parameters are
``str`` arguments named as in the path template, its request body (if any) an argument
named ``body`` typed with a pydantic model (parsed from JSON and validated) or ``str`` (the
body as text, for YAML), and its return annotation the pydantic model it answers with (or
:class:`~backhaul.admin.server.Response` for a body that is not JSON, with the media type
given to ``route``). The summary is the route's; the description is the handler's
docstring. Failures are raised as :class:`ApiError` and answered as problem+json.

:meth:`Router.openapi` writes the document from the same declarations, so what the API
answers and what the document says cannot drift apart. JSON Schemas come from pydantic
(JSON Schema 2020-12, the dialect OpenAPI 3.1 uses).
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, Field, ValidationError
from pydantic.json_schema import models_json_schema

from backhaul.admin.server import Request, Response, problem
from backhaul.http import REASONS

__all__ = ["ApiError", "Operation", "Problem", "Router"]

_JSON = "application/json"
_PROBLEM = "application/problem+json"


class Problem(BaseModel):
    """An error (RFC 9457 problem details)."""

    type: str = Field(default="about:blank", description="always about:blank here")
    title: str = Field(description="the HTTP status phrase")
    status: int
    detail: str = Field(description="what went wrong and what to do")


class ApiError(Exception):
    """Raised by a handler: answered as ``status`` with problem+json (``extra`` members
    added to the document, ``headers`` to the response)."""

    def __init__(
        self,
        status: int,
        detail: str,
        headers: tuple[tuple[str, str], ...] = (),
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers
        self.extra = extra

    def response(self) -> Response:
        return problem(self.status, self.detail, self.headers, **self.extra)


@dataclass(frozen=True)
class Operation:
    """One declared handler."""

    method: str
    path: str
    operation_id: str
    summary: str
    description: str
    tag: str
    status: int
    response_model: type[BaseModel] | None
    media_type: str
    body_model: type[BaseModel] | None
    body_text: tuple[str, ...]
    """Media types of a text body (the handler's ``body: str``); empty when none."""
    errors: tuple[int, ...]
    params: tuple[str, ...]
    pattern: re.Pattern[str]
    handler: Callable[..., Awaitable[Any]]


def _compile(path: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    names = tuple(re.findall(r"\{([a-z_]+)\}", path))
    regex = re.escape(path)
    for name in names:
        regex = regex.replace(re.escape("{" + name + "}"), f"(?P<{name}>[^/]+)")
    return re.compile(regex + "/?"), names


class Router:
    """The admin API's operations, in declaration order."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        summary: str,
        tag: str,
        status: int = 200,
        errors: tuple[int, ...] = (),
        media_type: str = _JSON,
        body_text: tuple[str, ...] = ("application/yaml", _JSON),
    ) -> Callable[[Callable[..., Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
        """Declare the decorated handler for ``method path``."""

        def declare(handler: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
            hints = typing.get_type_hints(handler)
            returns = hints.get("return")
            response_model = (
                returns if isinstance(returns, type) and issubclass(returns, BaseModel) else None
            )
            if response_model is None and returns is not Response:
                raise TypeError(f"{handler.__name__}: return a pydantic model or a Response")
            body = hints.get("body")
            body_model = body if isinstance(body, type) and issubclass(body, BaseModel) else None
            pattern, params = _compile(path)
            arguments = list(inspect.signature(handler).parameters)[1:]
            wanted = [*params, *(["body"] if body is not None else [])]
            if arguments != wanted:
                raise TypeError(f"{handler.__name__}: expected arguments (ctx, {wanted})")
            self.operations.append(
                Operation(
                    method=method,
                    path=path,
                    operation_id=handler.__name__,
                    summary=summary,
                    description=inspect.cleandoc(handler.__doc__ or ""),
                    tag=tag,
                    status=status,
                    response_model=response_model,
                    media_type=media_type,
                    body_model=body_model,
                    body_text=body_text if body is str else (),
                    errors=errors,
                    params=params,
                    pattern=pattern,
                    handler=handler,
                )
            )
            return handler

        return declare

    # -- dispatch ------------------------------------------------------------------------
    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], str]:
        """``(operation, path parameters, "")`` for a request, or ``(None, {}, allow)``:
        ``allow`` lists the methods the path answers ("" when no operation has the path).
        HEAD is answered as GET."""
        want = "GET" if method == "HEAD" else method
        allowed: list[str] = []
        for op in self.operations:
            found = op.pattern.fullmatch(path)
            if found is None:
                continue
            if op.method == want:
                return op, {k: unquote(v) for k, v in found.groupdict().items()}, ""
            allowed.append(op.method)
        if "GET" in allowed:
            allowed.append("HEAD")
        return None, {}, ", ".join(allowed)

    async def call(
        self, op: Operation, ctx: object, params: dict[str, str], request: Request
    ) -> Response:
        """Run ``op`` for ``request``: parse the body, call the handler, write its answer."""
        args: dict[str, Any] = dict(params)
        try:
            if op.body_model is not None:
                try:
                    data = json.loads(request.body or b"null")
                except ValueError as exc:
                    raise ApiError(400, f"the body is not JSON: {exc}") from exc
                try:
                    args["body"] = op.body_model.model_validate(data)
                except ValidationError as exc:
                    problems = [
                        {"path": ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
                        for err in exc.errors()
                    ]
                    raise ApiError(
                        422, "the body is not what this operation takes", problems=problems
                    ) from exc
            elif op.body_text:
                try:
                    args["body"] = request.body.decode("utf-8-sig")
                except UnicodeDecodeError as exc:
                    raise ApiError(400, f"the body is not UTF-8 text (offset {exc.start})") from exc
            result = await op.handler(ctx, **args)
        except ApiError as exc:
            return exc.response()
        if isinstance(result, Response):
            return result
        body = result.model_dump_json(indent=1).encode() + b"\n"
        return Response(op.status, body, op.media_type)

    # -- the document --------------------------------------------------------------------
    def openapi(
        self, info: dict[str, Any], bearer: bool, public: frozenset[str] = frozenset()
    ) -> dict[str, Any]:
        """The OpenAPI 3.1 document of every operation; ``bearer``: the API asks for a
        bearer token, except at the ``public`` paths."""
        models: list[tuple[type[BaseModel], Any]] = [(Problem, "serialization")]
        for op in self.operations:
            if op.response_model is not None:
                models.append((op.response_model, "serialization"))
            if op.body_model is not None:
                models.append((op.body_model, "validation"))
        refs, defs = models_json_schema(
            list(dict.fromkeys(models)), ref_template="#/components/schemas/{model}"
        )
        problem_ref = refs[(Problem, "serialization")]
        paths: dict[str, dict[str, Any]] = {}
        for op in self.operations:
            responses: dict[str, Any] = {}
            if op.response_model is not None:
                schema: dict[str, Any] = refs[(op.response_model, "serialization")]
            elif op.media_type == _JSON:
                schema = {"type": "object"}
            else:
                schema = {"type": "string"}
            responses[str(op.status)] = {
                "description": REASONS.get(op.status, b"").decode(),
                "content": {op.media_type: {"schema": schema}},
            }
            statuses = list(op.errors)
            open_path = op.path in public
            if bearer and not open_path:
                statuses.append(401)
            if op.body_model is not None or op.body_text:
                statuses += [400, 413] if op.body_model is None else [400, 422]
            for status in sorted(set(statuses)):
                entry: dict[str, Any] = {
                    "description": REASONS.get(status, b"").decode(),
                    "content": {_PROBLEM: {"schema": problem_ref}},
                }
                if status == 401:
                    entry["headers"] = {
                        "WWW-Authenticate": {
                            "description": "Bearer (RFC 6750)",
                            "schema": {"type": "string"},
                        }
                    }
                responses[str(status)] = entry
            doc: dict[str, Any] = {
                "operationId": op.operation_id,
                "summary": op.summary,
                "tags": [op.tag],
                "responses": responses,
            }
            if op.description:
                doc["description"] = op.description
            if op.params:
                doc["parameters"] = [
                    {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                    for p in op.params
                ]
            if op.body_model is not None:
                doc["requestBody"] = {
                    "required": True,
                    "content": {_JSON: {"schema": refs[(op.body_model, "validation")]}},
                }
            elif op.body_text:
                doc["requestBody"] = {
                    "required": True,
                    "content": {m: {"schema": {"type": "string"}} for m in op.body_text},
                }
            if bearer and open_path:
                doc["security"] = []
            paths.setdefault(op.path, {})[op.method.lower()] = doc
        document: dict[str, Any] = {
            "openapi": "3.1.0",
            "info": info,
            "paths": paths,
            "components": {"schemas": defs.get("$defs", {})},
        }
        if bearer:
            document["components"]["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}
            }
            document["security"] = [{"bearer": []}]
        return document
