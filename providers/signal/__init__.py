"""Signal, through a signal-cli JSON-RPC daemon.

``provider`` holds the provider class; ``fake`` its loopback fake and demo platform.
"""
