"""What pairbot sends WhatsApp: Graph API messages, one call at a time, and what a refusal means.

:class:`Graph` holds the HTTP session of a running provider and makes single calls:
``POST {api_base_url}/{api_version}/{phone_number_id}/messages`` (:meth:`Graph.send`) and the
start-up ``GET`` of the phone number (:meth:`Graph.check`). A failure that may be temporary
(no connection, no answer, 429, 5xx, Graph throttling codes) is raised as :class:`GraphRetry`
for the provider's retry loop; 131047 (the 24-hour window) as :class:`WindowClosed`, which the
owner notices understand as "unreachable until they write"; any other as
:class:`WhatsAppApiError`. The message bodies are
built here too (:func:`text_message`, :func:`button_message`). No SDK: aiohttp.

Neither the access token nor any message text appears in what this module raises.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import aiohttp

from bot.core.errors import ButtonError, ProviderError, RecipientUnreachable
from bot.core.models import Button
from providers._json import as_dict, as_int, as_str, dicts
from providers.limits import clip
from providers.retry import Retry
from providers.webhook import RestClient

DEFAULT_API_BASE_URL = "https://graph.facebook.com"
MAX_BUTTON_TITLE = 20
"""Characters in a reply button's title (the label the user sees)."""

# Graph error codes that mean "not done, try again later": API unknown/service, app or
# account rate limits, Cloud API throttling, "something went wrong", service unavailable,
# pair rate limit. Not 131048, "Spam rate limit hit": Meta restricts the number because too
# many of its messages were blocked or reported (WhatsApp error codes reference), and every
# retry is one more message held against it.
_RETRY_CODES = frozenset({1, 2, 4, 80007, 130429, 131000, 131016, 131056})
SPAM_LIMIT = 131048
"""Graph's "Spam rate limit hit": refused for good, never retried."""
WINDOW_CLOSED = 131047
"""Graph's "Re-engagement message": more than 24 hours since the recipient last wrote, so
free-form messages are refused until they write again (WhatsApp error codes reference). Meta
answers it in the send's reply, or (the usual way on the Cloud API) accepts the send and then
posts a ``failed`` status webhook carrying it: "returned either synchronously as a Graph API
response, asynchronously via Webhook, or sometimes through both methods"."""
_HINTS = {
    190: "the access token is invalid or expired",
    100: "a parameter is invalid (check phone_number_id)",
    WINDOW_CLOSED: "more than 24 hours since the recipient last wrote: free text is refused "
    "until they write again",
    SPAM_LIMIT: "Meta's spam rate limit: too many of this number's messages were blocked or "
    "reported; check its quality rating in WhatsApp Manager (not retried)",
    131026: "the recipient cannot receive this message (not on WhatsApp, or an old client)",
    131030: "the recipient is not on the test number's allowed list",
}


def explain(code: int) -> str:
    """``Graph error code N``, and what it means where pairbot knows."""
    hint = _HINTS.get(code)
    return f"Graph error code {code}" + (f": {hint}" if hint else "")


class WhatsAppApiError(ProviderError):
    """The Graph API refused a request, or kept failing until the retries ran out.

    Attributes:
        status: the HTTP status (0 when no answer came).
        code: the Graph error code (0 when there was none).
    """

    def __init__(self, what: str, *, status: int = 0, code: int = 0, how: str = "") -> None:
        hint = _HINTS.get(code)
        detail = how or (f"HTTP {status}" if status else "no answer")
        if code:
            detail += f", Graph error code {code}"
        super().__init__(f"{what} ({detail})" + (f": {hint}" if hint else ""))
        self.status = status
        self.code = code


class WindowClosed(WhatsAppApiError, RecipientUnreachable):
    """131047: the recipient has not written for 24 hours; nothing reaches them until they do.

    Args:
        name: the provider's name.
        to: the recipient's phone number or BSUID.
        status: the send's HTTP status (400 when refused in the answer; 200 when the send was
            taken and a ``failed`` status webhook said so).
    """

    def __init__(self, name: str, to: str, *, status: int) -> None:
        how = f"HTTP {status}" if status != 200 else "a failed status webhook"
        super().__init__(
            f"{name}: cannot write to {to} until they write",
            status=status,
            code=WINDOW_CLOSED,
            how=how,
        )


class GraphRetry(Retry):
    """One call failed in a way worth another try; ``status`` and ``code`` as it failed."""

    def __init__(self, reason: str, *, status: int = 0, code: int = 0) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code


def _envelope(to: str, kind: str, content: dict[str, Any]) -> dict[str, Any]:
    """A message to ``to``: a phone number (``wa_id``) goes in ``to``, a BSUID in
    ``recipient`` (Messages API, "Business-scoped user IDs": ``to`` takes a phone number,
    ``recipient`` a BSUID; with both, ``to`` wins)."""
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to" if to.isdigit() else "recipient": to,
        "type": kind,
        kind: content,
    }


def address(payload: dict[str, Any]) -> str:
    """Whom a message built here goes to: its phone number or BSUID."""
    return as_str(payload.get("to")) or as_str(payload.get("recipient"))


def text_message(to: str, text: str) -> dict[str, Any]:
    """A plain text message (no link preview)."""
    return _envelope(to, "text", {"body": text, "preview_url": False})


def reply_buttons(buttons: Sequence[Button]) -> list[dict[str, Any]]:
    """The ``action.buttons`` of an interactive message; titles cut to 20 characters.

    Raises:
        ButtonError: two buttons carry the same command or (once cut) the same title.
    """
    ids = [button.command for button in buttons]
    titles = [
        clip(button.label.strip(), MAX_BUTTON_TITLE, strip=True) or "…" for button in buttons
    ]
    if len(set(ids)) != len(ids) or len(set(titles)) != len(titles):
        raise ButtonError("WhatsApp reply buttons need distinct commands and labels")
    return [
        {"type": "reply", "reply": {"id": i, "title": t}} for i, t in zip(ids, titles, strict=True)
    ]


def button_message(to: str, body: str, buttons: Sequence[Button]) -> dict[str, Any]:
    """An interactive message: ``body`` with reply buttons under it.

    Raises:
        ButtonError: as :func:`reply_buttons`.
    """
    action = {"buttons": reply_buttons(buttons)}
    return _envelope(
        to, "interactive", {"type": "button", "body": {"text": body}, "action": action}
    )


class Graph(RestClient):
    """The Graph API for one business phone number.

    Args:
        phone_url: ``{api_base_url}/{api_version}/{phone_number_id}``, the root of every call.
        access_token: the bearer token of every call.
        timeout, name: as for :class:`~providers.webhook.RestClient`.
    """

    def __init__(
        self, *, phone_url: str, access_token: str, timeout: aiohttp.ClientTimeout, name: str
    ) -> None:
        super().__init__(root=phone_url, name=name, timeout=timeout)
        self._auth = {"Authorization": f"Bearer {access_token}"}

    async def check(self) -> tuple[int, int]:
        """GET the phone number: the HTTP status and the Graph error code (0 if none).

        Raises:
            aiohttp.ClientError, TimeoutError, ValueError: no (JSON) answer came.
        """
        async with self._session.get(self._root, headers=self._auth) as resp:
            status = resp.status
            data = await resp.json(content_type=None)
        return status, as_int(as_dict(as_dict(data).get("error")).get("code"))

    async def send(self, payload: dict[str, Any]) -> str:
        """POST one message once; return its wamid.

        Raises:
            GraphRetry: no connection, no answer, or an error worth retrying.
            WindowClosed: refused: the recipient has not written for 24 hours.
            WhatsAppApiError: Graph refused the message, or answered without an id.
        """
        try:
            async with self._session.post(
                f"{self._root}/messages", json=payload, headers=self._auth
            ) as resp:
                status = resp.status
                raw = await resp.read()
        except aiohttp.ClientConnectorError:
            raise GraphRetry("cannot connect") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The request may have gone out: a status webhook will tell (the provider waits).
            raise GraphRetry(f"no answer: {type(exc).__name__}") from None
        try:
            data = as_dict(json.loads(raw))
        except ValueError:
            data = {}
        if status == 200:
            sent = dicts(data.get("messages"))
            message_id = as_str(sent[0].get("id")) if sent else ""
            if message_id:
                return message_id
            raise WhatsAppApiError(
                f"{self._name}: the Graph API answer has no message id", status=status
            )
        code = as_int(as_dict(data.get("error")).get("code"))
        if code == WINDOW_CLOSED:
            raise WindowClosed(self._name, address(payload), status=status)
        if status == 429 or status >= 500 or code in _RETRY_CODES:
            raise GraphRetry(f"HTTP {status}, code {code}", status=status, code=code)
        raise WhatsAppApiError(
            f"{self._name}: the Graph API refused the message", status=status, code=code
        )


__all__ = [
    "DEFAULT_API_BASE_URL",
    "SPAM_LIMIT",
    "WINDOW_CLOSED",
    "Graph",
    "GraphRetry",
    "WhatsAppApiError",
    "WindowClosed",
    "address",
    "button_message",
    "explain",
    "reply_buttons",
    "text_message",
]
