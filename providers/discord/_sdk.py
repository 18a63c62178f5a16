"""discord.py, imported once for every Discord module, quietly.

discord.py imports ``audioop`` (deprecated since Python 3.11) for voice, which pairbot never
uses; importing it here, under a filter for that one warning, keeps strict runs (``-W error``,
pytest) from failing, whichever Discord module is imported first.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    from discord import app_commands
    from discord.gateway import DiscordWebSocket

# Voice is never used: skip discord.py's one-time "PyNaCl/davey is not installed" warnings.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False

__all__ = ["DiscordWebSocket", "app_commands", "discord"]
