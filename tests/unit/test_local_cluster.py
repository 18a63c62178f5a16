"""What the cluster of a process alone does beyond the cluster contract: its memory is bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from stores import cluster as local
from stores.cluster import LocalCluster

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)


def test_a_day_of_message_claims_keeps_only_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "CLAIMS_KEPT", 50)
    alone = LocalCluster("alone")
    day = timedelta(days=1)
    for n in range(120):
        assert alone.claim(f"in:telegram:{n}", now=T0, ttl=day)
    assert alone.claimed_until("in:telegram:119", now=T0) == T0 + day
    assert alone.claimed_until("in:telegram:70", now=T0) == T0 + day
    assert alone.claimed_until("in:telegram:69", now=T0) is None, "the oldest went first"
    assert not alone.claim("in:telegram:100", now=T0, ttl=day), "a kept claim still holds"
    alone.close()


def test_a_retaken_claim_counts_as_the_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(local, "CLAIMS_KEPT", 3)
    alone = LocalCluster("alone")
    second = timedelta(seconds=1)
    assert alone.claim("lockout:owner", now=T0, ttl=second)
    assert alone.claim("lockout:owner", now=T0 + 2 * second, ttl=timedelta(hours=1))
    for n in range(2):
        alone.claim(f"in:{n}", now=T0 + 2 * second, ttl=second)
    assert alone.claimed_until("lockout:owner", now=T0 + 2 * second) is not None
    alone.close()
