"""What pairbot asks of a BlueBubbles server: its REST API, one call at a time.

:class:`BlueBubbles` holds the HTTP session of a running provider and makes single calls:
``GET /api/v1/server/info`` (:meth:`BlueBubbles.server_info`), ``POST /api/v1/message/text``
(:meth:`BlueBubbles.send_text`), ``POST /api/v1/message/query`` (:meth:`BlueBubbles.messages`)
and ``POST /api/v1/chat/query`` (:meth:`BlueBubbles.chats`).

A send that failed raises :class:`~providers.retry.Retry` when another try may help: plain
:class:`~providers.retry.Retry` when it certainly did not go out (no connection, 429, 503),
:class:`MaybeSent` when it may have (no answer in time, the connection dropped, 502/504, "already
queued" while the first try is still being sent) and :class:`ServerError` for a 500. BlueBubbles
answers a send only once Messages shows it (``MessageInterface.sendMessageSync`` awaits a
``MessagePromise``, ``managers/outgoingMessageManager/messagePromise.ts``), and answers 500
"Message Send Error" when that wait times out after 2 minutes: the message may well be out. The
provider must look (:meth:`BlueBubbles.messages`) before it sends again. Anything else raises
:class:`BlueBubblesError`.

The password rides in the query of every call: it never appears in what this module raises
(no URL is quoted, client errors are named by type only).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp

from bot.core.errors import ProviderError
from providers.retry import Retry
from providers.webhook import RestClient

_RETRY_STATUSES = frozenset({429, 502, 503, 504})
_ALREADY_QUEUED = "already queued"  # BlueBubbles' 400 while a tempGuid is still being sent
_QUERY_TIMEOUT = 30.0  # a database read on the Mac: no AppleScript, no wait for Messages


class BlueBubblesError(ProviderError):
    """BlueBubbles refused a request or could not be reached (never quotes the password).

    Attributes:
        status: the HTTP status BlueBubbles answered, or None if it was not reached.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MaybeSent(Retry):
    """The send failed in a way that does not say whether the message went out."""


class ServerError(MaybeSent):
    """A 500 ("Message Send Error"): iMessage failed, or BlueBubbles gave up waiting to see the
    message go out (it may have)."""


class BlueBubbles(RestClient):
    """The REST API of one BlueBubbles server.

    Args:
        root: the server root, e.g. ``http://mac-mini.lan:1234``.
        password: the server password, sent as ``?password=`` with every call.
        timeout, name: as for :class:`~providers.webhook.RestClient`.
    """

    def __init__(
        self, *, root: str, password: str, timeout: aiohttp.ClientTimeout, name: str
    ) -> None:
        super().__init__(root=root, name=name, timeout=timeout)
        self._auth = {"password": password}

    async def server_info(self) -> tuple[int, Any]:
        """``GET /api/v1/server/info`` (10 s at most): the HTTP status and the JSON body
        (None if it is not JSON).

        Raises:
            aiohttp.ClientError, TimeoutError: the server was not reached.
        """
        async with self._session.get(
            f"{self._root}/api/v1/server/info",
            params=self._auth,
            timeout=aiohttp.ClientTimeout(total=10),
        ) as resp:
            return resp.status, await _json_or_none(resp)

    async def send_text(self, body: Mapping[str, Any]) -> str:
        """One try at ``POST /api/v1/message/text``; return the message guid.

        Raises:
            Retry: worth another try with the same ``tempGuid``.
            ServerError: iMessage failed (HTTP 500 and up, other than the retried ones).
            BlueBubblesError: BlueBubbles refused the message or the password.
        """
        try:
            async with self._session.post(
                f"{self._root}/api/v1/message/text", params=self._auth, json=body
            ) as resp:
                status = resp.status
                payload = await _json_or_none(resp)
        except aiohttp.ClientConnectorError as exc:
            raise Retry(type(exc).__name__) from None  # never connected: not sent
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise MaybeSent(type(exc).__name__) from None
        if status == 200 and isinstance(payload, dict):
            data = payload.get("data")
            guid = data.get("guid") if isinstance(data, dict) else None
            if isinstance(guid, str) and guid:
                return guid
            raise BlueBubblesError(
                f"{self._name}: BlueBubbles answered without a message guid", status=status
            )
        raise self._failure(status, payload)

    async def messages(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``POST /api/v1/message/query`` (``messageRouter.ts`` ``MessageRouter.query``): the
        messages the body selects (``chatGuid``, ``after`` in ms, inclusive, ``sort``,
        ``limit`` up to 1000, ``offset``, ``with``).

        Raises:
            Retry: BlueBubbles could not be asked (no connection, no answer, 429/5xx).
            BlueBubblesError: it refused the query or the password.
        """
        return await self._query("/api/v1/message/query", body)

    async def chats(self, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        """``POST /api/v1/chat/query`` (``chatRouter.ts`` ``ChatRouter.query``): the chats the
        body selects; ``guid`` matches one chat guid exactly (``getChats``: ``chat.guid =``).

        Raises:
            Retry, BlueBubblesError: as for :meth:`messages`.
        """
        return await self._query("/api/v1/chat/query", body)

    async def _query(self, path: str, body: Mapping[str, Any]) -> list[dict[str, Any]]:
        try:
            async with self._session.post(
                f"{self._root}{path}",
                params=self._auth,
                json=dict(body),
                timeout=aiohttp.ClientTimeout(total=_QUERY_TIMEOUT),
            ) as resp:
                status = resp.status
                payload = await _json_or_none(resp)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise Retry(type(exc).__name__) from None
        if status == 200 and isinstance(payload, dict):
            data = payload.get("data")
            if isinstance(data, list):
                return [item for item in data if isinstance(item, dict)]
        if status in _RETRY_STATUSES or status >= 500:
            raise Retry(f"HTTP {status}")
        if status in (401, 403):
            raise BlueBubblesError(
                f"{self._name}: BlueBubbles rejected the password", status=status
            )
        raise BlueBubblesError(
            f"{self._name}: BlueBubbles refused the query (HTTP {status}: {_error_text(payload)})",
            status=status,
        )

    def _failure(self, status: int, payload: object) -> Exception:
        """What a send answered with ``status`` (not a success) raises."""
        if status in (429, 503):
            return Retry(f"HTTP {status}")
        if status in _RETRY_STATUSES:
            return MaybeSent(f"HTTP {status}")  # a gateway's answer: the server may have sent
        if status >= 500:
            return ServerError(f"HTTP {status}: {_error_text(payload)}")
        if status == 400 and _ALREADY_QUEUED in _error_text(payload).lower():
            return MaybeSent("this message is still being sent")  # wait for the first attempt
        if status in (401, 403):
            return BlueBubblesError(
                f"{self._name}: BlueBubbles rejected the password", status=status
            )
        return BlueBubblesError(
            f"{self._name}: BlueBubbles refused the message (HTTP {status}: "
            f"{_error_text(payload)})",
            status=status,
        )


async def _json_or_none(resp: aiohttp.ClientResponse) -> Any:
    try:
        return await resp.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        return None


def _error_text(payload: object) -> str:
    """BlueBubbles errors read ``{"message": ..., "error": {"type", "message"}}``."""
    if not isinstance(payload, dict):
        return "no details"
    error = payload.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:200]
    message = payload.get("message")
    return str(message)[:200] if isinstance(message, str) else "no details"


__all__ = ["BlueBubbles", "BlueBubblesError", "MaybeSent", "ServerError"]
