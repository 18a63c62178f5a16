"""The running bot: the app and its jobs, the scheduler, the handlers, logging, the config.

It reaches storage and platforms only through the core's protocols; the concrete store and
providers are handed in by the composition root (:mod:`bot.cli`).
"""
