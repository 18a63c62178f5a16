"""The services: the state rules of DM pairing, node pairing and owner commands.

They run over a :class:`bot.core.protocols.StateStore` transaction and import only the core.
"""
