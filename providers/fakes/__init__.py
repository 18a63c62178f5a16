"""Loopback fakes of the chat platforms' APIs, one module per platform.

They ship in the product so that ``pairbot demo`` and the e2e tests can drive the real SDKs
with no account and no network: only the SDK's base URL changes.
"""

from __future__ import annotations
