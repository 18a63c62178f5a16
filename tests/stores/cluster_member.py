"""An instance of a PostgreSQL cluster in a process of its own, for the ``kill -9`` test (run
as ``python -m tests.stores.cluster_member DSN INSTANCE_ID``).

It holds the lease ``telegram`` and claims ``update:1`` (both from :data:`T0` for
:data:`TTL`), beats, subscribes to ``news``, prints ``READY``, then publishes ``n`` = 0, 1, ...
on ``news`` forever, printing ``ACK n`` after each publish returned. Meant to be killed.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

from stores.sql.cluster import PostgresCluster
from stores.sql.postgres import PostgresStore

T0 = datetime(2026, 1, 1, 12, tzinfo=UTC)
TTL = timedelta(seconds=15)


def main(dsn: str, instance_id: str) -> None:
    cluster = PostgresCluster(PostgresStore(dsn), instance_id=instance_id)
    assert cluster.hold("telegram", now=T0, ttl=TTL)
    assert cluster.claim("update:1", now=T0, ttl=TTL)
    cluster.beat(now=T0, facts={"pid": 0})
    cluster.subscribe("news", lambda _message: None)
    print("READY", flush=True)
    n = 0
    while True:
        cluster.publish("news", {"from": instance_id, "n": str(n)})
        print(f"ACK {n}", flush=True)
        n += 1


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
