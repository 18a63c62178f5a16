"""The gateway's frames: reading a request, checking its params, writing answers and events.

Frames (JSON text, one object each)::

    request  {"type": "req", "id": "<any>", "method": "<name>", "params": {...}}
    answer   {"type": "res", "id": "<same>", "ok": true, "payload": {...}}
             {"type": "res", "id": "<same>", "ok": false, "error": {"code", "message"}}
    event    {"type": "event", "event": "<name>", "payload": {...}}

Everything a peer sends is checked here before any method sees it; everything the gateway
sends is built here, so the bytes on the wire have one source (``docs/gateway-protocol.md``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from bot.core.errors import PairbotError
from bot.core.models import NodeDecision

if TYPE_CHECKING:  # the CLI reads error codes here without loading aiohttp
    from aiohttp import web

MAX_FRAME = 16 * 1024
"""Frames larger than this get a FRAME_TOO_LARGE error; ten times this closes the socket."""
MAX_PARAM = 256
"""The longest string param accepted."""

Frame = dict[str, Any]


class ErrorCode(StrEnum):
    """The ``error.code`` of an error answer: stable, for programs to act on."""

    INVALID_REQUEST = "INVALID_REQUEST"
    FRAME_TOO_LARGE = "FRAME_TOO_LARGE"
    UNKNOWN_METHOD = "UNKNOWN_METHOD"
    UNAUTHORIZED = "UNAUTHORIZED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_PAIRED = "ALREADY_PAIRED"
    RATE_LIMITED = "RATE_LIMITED"
    INTERNAL = "INTERNAL"


class GatewayError(PairbotError):
    """An error answer: a stable code and a message safe to show to the peer.

    ``request_id`` is the id of the request it answers, when one could be read.
    """

    def __init__(
        self, code: ErrorCode, message: str, *, request_id: str | int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Request:
    """A request frame that has the right shape (its method may still be unknown)."""

    id: str | int
    method: str
    params: dict[str, Any]


def parse_request(data: str) -> Request:
    """Read one text frame as a request.

    Raises:
        GatewayError: too large, not JSON, or not shaped as a request (with the request's id
            when it could be read, so the answer can carry it).
    """
    if len(data) > MAX_FRAME or len(data.encode()) > MAX_FRAME:
        raise GatewayError(ErrorCode.FRAME_TOO_LARGE, f"frames are limited to {MAX_FRAME} bytes")
    try:
        frame = json.loads(data)
    except (ValueError, RecursionError):
        raise GatewayError(ErrorCode.INVALID_REQUEST, "not valid JSON") from None
    req_id = frame.get("id") if isinstance(frame, dict) else None
    if not isinstance(req_id, str | int) or isinstance(req_id, bool):
        req_id = None
    if (
        not isinstance(frame, dict)
        or frame.get("type") != "req"
        or not isinstance(frame.get("method"), str)
        or req_id is None
    ):
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            'expected {"type": "req", "id", "method", "params"}',
            request_id=req_id,
        )
    params = frame.get("params", {})
    if not isinstance(params, dict):
        raise GatewayError(
            ErrorCode.INVALID_REQUEST, "params must be an object", request_id=req_id
        )
    return Request(id=req_id, method=frame["method"], params=params)


def param(params: dict[str, Any], name: str, *, required: bool = True) -> str:
    """The string param ``name`` ("" when absent and not ``required``)."""
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise GatewayError(ErrorCode.INVALID_REQUEST, f"params.{name} is required")
        return ""
    if not isinstance(value, str):
        raise GatewayError(ErrorCode.INVALID_REQUEST, f"params.{name} must be a string")
    if len(value) > MAX_PARAM:
        raise GatewayError(ErrorCode.INVALID_REQUEST, f"params.{name} is too long")
    return value


def node_id_param(params: dict[str, Any]) -> str:
    """The ``nodeId`` param: printable, with no leading or trailing spaces."""
    value = param(params, "nodeId")
    if value != value.strip() or not value.isprintable():
        raise GatewayError(
            ErrorCode.INVALID_REQUEST,
            "params.nodeId must be printable text without leading or trailing spaces",
        )
    return value


def answer(req_id: str | int, payload: Any) -> Frame:
    """A successful answer to request ``req_id``."""
    return {"type": "res", "id": req_id, "ok": True, "payload": payload}


def error(req_id: str | int | None, code: ErrorCode, message: str) -> Frame:
    """An error answer to request ``req_id`` (None: no id could be read)."""
    return {
        "type": "res",
        "id": req_id,
        "ok": False,
        "error": {"code": code.value, "message": message},
    }


def event(name: str, payload: dict[str, Any]) -> Frame:
    """An event frame."""
    return {"type": "event", "event": name, "payload": payload}


def resolved(decision: NodeDecision) -> Frame:
    """The ``node.pair.resolved`` event telling ``decision`` (its token only on approval)."""
    payload: dict[str, Any] = {
        "requestId": decision.request_id,
        "nodeId": decision.node_id,
        "decision": decision.verdict.told,
    }
    if decision.token is not None:
        payload["token"] = decision.token
    return event("node.pair.resolved", payload)


@dataclass(eq=False)
class Conn:
    """One peer's WebSocket, and what it has proved or asked on it."""

    ws: web.WebSocketResponse
    remote: str
    operator: bool = False
    node_id: str | None = None
    """The node this connection proved to be (``node.connect``)."""
    token_hash: str = field(default="", repr=False)
    """The stored hash of the token it proved that with: a revocation closes it unless the
    node is still paired with that token (a stale or replayed revocation closes nothing)."""
    bad_tokens: int = 0
    nonce: str = field(default="", repr=False)
    """The nonce ``node.challenge`` handed this connection, until a signature spends it."""
    asked: dict[str, str] = field(default_factory=dict)
    """nodeId → requestId of the request this connection made (or came back for)."""
    last_active: float = field(default_factory=time.monotonic)
    """When a frame last went either way: an idle connection is timed from here, so a peer
    just told a decision has the whole idle timeout to act on it."""

    async def send(self, frame: Frame) -> bool:
        """Send ``frame``; False if the connection is closed or the send failed."""
        if self.ws.closed:
            return False
        self.last_active = time.monotonic()
        try:
            await self.ws.send_str(json.dumps(frame))
        except (ConnectionError, RuntimeError):
            return False
        return True
