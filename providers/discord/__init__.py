"""Discord, through discord.py.

``provider`` holds the provider class; ``fake`` its loopback fake and demo platform.
"""
