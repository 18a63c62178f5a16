"""Slack, through slack-bolt.

``provider`` holds the provider class; ``fake`` its loopback fake and demo platform.
"""
