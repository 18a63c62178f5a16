"""WhatsApp, through the Business Cloud API.

``provider`` holds the provider class; ``fake`` its loopback fake and demo platform.
"""
