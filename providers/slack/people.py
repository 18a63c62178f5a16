"""Who is who on Slack: the bot's IM with each user, and the name each gives themselves.

Both come from the Web API and are cached: an IM channel (``conversations.open``) for as long
as the provider lives, and named for free by a ``message.im`` event or a post to a user id; a
profile (``users.info``) for ten minutes. :meth:`People.kind` says where a button press or a
slash command came from: a DM only in the bot's own IM with that user, since another person's
IM (a ``D…`` channel too) is no DM with the bot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from slack_sdk.web.async_client import AsyncWebClient

from bot.core.errors import ProviderError
from bot.core.models import ChatKind
from providers._json import as_dict, as_str
from providers.slack.events import Interaction, looks_like_im, shared_kind

_PROFILE_TTL = 600.0


class People:
    """The IM channels and profiles of one provider's users.

    Args:
        name: the provider name, for errors and the log.
        client: the provider's Web API client (raises if the provider is not running).
        log: the provider's logger.
    """

    def __init__(
        self, *, name: str, client: Callable[[], AsyncWebClient], log: logging.Logger
    ) -> None:
        self._name = name
        self._client = client
        self._log = log
        self._ims: dict[str, str] = {}
        self._profiles: dict[str, tuple[float, str, dict[str, str]]] = {}

    def met(self, user_id: str, im_id: str) -> None:
        """Slack named ``im_id`` as the bot's IM with ``user_id`` (an event, a post)."""
        self._ims[user_id] = im_id

    async def im(self, user_id: str) -> str:
        """The bot's IM channel (``D…``) with ``user_id``, by ``conversations.open``, cached.

        Raises:
            ProviderStateError: the provider is not running.
            ProviderError: Slack opened no channel.
            slack_sdk.errors.SlackApiError: Slack refused (e.g. no ``im:write`` scope).
        """
        cached = self._ims.get(user_id)
        if cached:
            return cached
        response = await self._client().conversations_open(users=user_id)
        channel_id = as_str(as_dict(response.get("channel")).get("id"))
        if not channel_id:
            raise ProviderError(f"{self._name}: conversations.open returned no channel")
        self._ims[user_id] = channel_id
        return channel_id

    async def kind(self, interaction: Interaction) -> ChatKind:
        """DM only for the bot's own IM with that user; another person's IM is no DM here."""
        channel_id, channel_name = interaction.channel_id, interaction.channel_name
        if not looks_like_im(channel_id, channel_name):
            return shared_kind(channel_id, channel_name)
        try:
            mine = await self.im(interaction.user_id)
        except Exception:
            self._log.warning(
                "%s: could not open the IM with %s; treating it as no DM",
                self._name,
                interaction.user_id,
            )
            return ChatKind.GROUP
        return ChatKind.DM if mine == channel_id else ChatKind.GROUP

    async def profile(self, user_id: str) -> tuple[str, dict[str, str]]:
        """The name a user gives themselves (untrusted), from ``users.info``, and its meta."""
        now = asyncio.get_running_loop().time()
        cached = self._profiles.get(user_id)
        if cached is not None and now - cached[0] < _PROFILE_TTL:
            return cached[1], dict(cached[2])
        try:
            response = await self._client().users_info(user=user_id)
        except Exception as exc:  # names are a nicety; the id is what counts
            self._log.debug(
                "%s: users.info for %s failed (%s)", self._name, user_id, type(exc).__name__
            )
            return "", {}
        user = as_dict(response.get("user"))
        profile = as_dict(user.get("profile"))
        real = as_str(profile.get("real_name")) or as_str(user.get("real_name"))
        display = as_str(profile.get("display_name"))
        meta = {key: value for key, value in (("name", real), ("username", display)) if value}
        name = real or display
        self._profiles[user_id] = (now, name, meta)
        return name, dict(meta)


__all__ = ["People"]
