"""The SQL backends' schema: numbered migrations, written once for every dialect.

Each migration is a list of statements with three dialect words left open: ``{serial}`` (an
integer primary key that only grows, the insertion order of a table's rows), ``{time}`` (the
column type of a time, which :class:`stores.sql.base.Dialect` encodes) and ``{text}``. The
statements are plain ``CREATE TABLE`` / ``CREATE INDEX`` without ``IF NOT EXISTS``: they run
once, under the write lock, after the version has been read again under that lock, so a
second process starting at the same moment finds the work done instead of racing it (and a
race would fail loudly, not pass unnoticed).

To add a table (the next migration), append a list to :data:`MIGRATIONS`: the version stored
in ``pairbot_meta`` is the number of migrations applied, and a database holding a larger
number than this code knows is refused untouched.
"""

from __future__ import annotations

META_TABLE = "pairbot_meta"
"""Key/value rows: ``schema_version``, and ``allowlist_log_floor`` (see :data:`MIGRATIONS`)."""

CURSORS_TABLE = "cursors"
SCHEMA_VERSION_KEY = "schema_version"
LOG_FLOOR_KEY = "allowlist_log_floor"
"""The highest allowlist-log sequence number trimmed away: a gate cache that has applied the
log only up to a lower one missed changes and must reload its allowlists whole."""

MIGRATIONS: list[list[str]] = [
    # 1: the state of the JSON store, one table per kind of file, each row's insertion order
    # in ``seq`` (a replace updates the row in place, so an entry keeps its place).
    [
        f"CREATE TABLE {META_TABLE} (key {{text}} PRIMARY KEY, value {{text}} NOT NULL)",
        """CREATE TABLE pending_requests (
            seq {serial},
            provider {text} NOT NULL,
            sender_id {text} NOT NULL,
            code {text} NOT NULL,
            created_at {time} NOT NULL,
            last_seen_at {time} NOT NULL,
            last_sent_at {time},
            meta {text},
            extra {text},
            UNIQUE (provider, sender_id)
        )""",
        # Codes are unique across every provider's requests: the database refuses a second.
        "CREATE UNIQUE INDEX pending_requests_code ON pending_requests (code)",
        "CREATE INDEX pending_requests_order ON pending_requests (provider, seq)",
        "CREATE INDEX pending_requests_age ON pending_requests (provider, created_at)",
        """CREATE TABLE allowlist (
            seq {serial},
            provider {text} NOT NULL,
            sender_id {text} NOT NULL,
            UNIQUE (provider, sender_id)
        )""",
        "CREATE INDEX allowlist_order ON allowlist (provider, seq)",
        # Every grant (added = 1) and revocation (0), in commit order: what a gate cache in
        # another process reads to catch up without reloading the allowlists. Old rows are
        # trimmed; LOG_FLOOR_KEY says how far.
        """CREATE TABLE allowlist_log (
            seq {serial},
            provider {text} NOT NULL,
            sender_id {text} NOT NULL,
            added INTEGER NOT NULL
        )""",
        """CREATE TABLE node_requests (
            seq {serial},
            request_id {text} NOT NULL UNIQUE,
            node_id {text} NOT NULL,
            display_name {text} NOT NULL,
            platform {text} NOT NULL,
            version {text} NOT NULL,
            created_at {time} NOT NULL,
            remote {text} NOT NULL,
            pickup_hash {text} NOT NULL,
            is_repair INTEGER NOT NULL,
            extra {text}
        )""",
        """CREATE TABLE paired_nodes (
            seq {serial},
            node_id {text} NOT NULL UNIQUE,
            display_name {text} NOT NULL,
            platform {text} NOT NULL,
            version {text} NOT NULL,
            token_hash {text} NOT NULL,
            created_at {time} NOT NULL,
            approved_at {time} NOT NULL,
            last_connected_at {time},
            extra {text}
        )""",
        """CREATE TABLE approval_notices (
            seq {serial},
            provider {text} NOT NULL,
            sender_id {text} NOT NULL,
            approved_at {time} NOT NULL,
            chat_id {text},
            extra {text},
            UNIQUE (provider, sender_id)
        )""",
        # One row per audit record: the record's JSON text as audit.jsonl would hold it (so
        # every backend returns the same dict), its time and event for queries.
        """CREATE TABLE audit_log (
            seq {serial},
            ts {time} NOT NULL,
            event {text} NOT NULL,
            record {text} NOT NULL
        )""",
    ],
    # 2: the providers' cursors (:class:`bot.core.protocols.Cursors`): a small string per key,
    # the provider's own, saved outside the pairing transactions.
    [f"CREATE TABLE {CURSORS_TABLE} (key {{text}} PRIMARY KEY, value {{text}} NOT NULL)"],
    # 3: nothing here; PostgreSQL spreads its pending counts over rows (so strangers' requests
    # need not wait for each other: see stores.sql.postgres).
    [],
    # 4: the cluster's tables (:class:`bot.core.protocols.Cluster`), PostgreSQL's alone: on a
    # SQLite state the one instance keeps its cluster in memory, so the step is empty here
    # and :class:`stores.sql.postgres.PostgresDialect` fills it in (the version still counts
    # it, so one number says the same of every backend's schema).
    [],
    # 5: grants that end. Each allowlist row keeps its grant's end (NULL: it does not end, as
    # every grant made before this step), and so does each row of the log, so a gate cache
    # catches up on ends as on grants; the prune finds the grants that ended by an index of
    # the few rows that have an end.
    [
        "ALTER TABLE allowlist ADD COLUMN ends_at {time}",
        "ALTER TABLE allowlist_log ADD COLUMN ends_at {time}",
        "CREATE INDEX allowlist_ends ON allowlist (provider, ends_at) WHERE ends_at IS NOT NULL",
    ],
    # 6: one-time node invites. Only each secret's hash is kept, unique, so an invite is
    # found by the hash of what a node shows; a spent one keeps ``used_at`` (and whom it
    # paired) until it would have expired. Spending is one conditional UPDATE (``used_at IS
    # NULL``): of two instances spending one invite at once, exactly one changes the row.
    [
        """CREATE TABLE node_invites (
            seq {serial},
            invite_id {text} NOT NULL UNIQUE,
            secret_hash {text} NOT NULL UNIQUE,
            name {text} NOT NULL,
            created_at {time} NOT NULL,
            expires_at {time} NOT NULL,
            used_at {time},
            used_by {text},
            extra {text}
        )""",
    ],
]

CLUSTER_MIGRATION = 4
"""The number of the migration that makes the cluster's tables (PostgreSQL's words only)."""

SCHEMA_VERSION = len(MIGRATIONS)
"""The schema this code reads and writes."""
