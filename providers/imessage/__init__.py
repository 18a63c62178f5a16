"""iMessage, through a BlueBubbles server.

``provider`` holds the provider class; ``fake`` its loopback fake and demo platform.
"""
