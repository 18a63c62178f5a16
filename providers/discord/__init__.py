"""Discord, through discord.py.

``provider`` holds the provider class, on :class:`providers.base.BaseProvider`; beside it
what is Discord's own: ``client`` (discord.py's client and its process-wide URLs), ``kinds``
(DM by channel type), ``views`` (persistent buttons), ``commands`` (DM slash commands) and
``_sdk`` (discord.py, imported quietly). ``fake`` is its loopback fake and demo platform.
"""
