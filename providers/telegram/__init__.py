"""Telegram, through python-telegram-bot.

``provider`` holds the provider class; ``fake`` its loopback fake and demo platform.
"""
