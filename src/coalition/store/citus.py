"""The layout of the schema on Citus (distributed PostgreSQL), applied by `coalition db upgrade`
when the database has the `citus` extension (docs/scaling.md).

- Reference tables (a copy on every node): partners, rates, keys, partner and coalition
  accounts, signing keys, job leases; small, read by every request, written by operators.
- Distributed by `member_id`, co-located with `members`: every member-scoped row, so that one
  earn, burn, reverse or hold writes one shard (its idempotency key and partner event included).
- Distributed by their lookup key: partner links (by partner customer id) and member
  identifiers (by digest), read by that key on every request that names a member that way.
- Coordinator tables (Citus local tables): settlement and reconciliation, written by jobs
  that fan out over the members' shards.

Citus refuses primary keys and unique constraints without the distribution column, and foreign
keys between tables that are not co-located on it. So each such key gains `member_id` (a
uniqueness that was per table becomes per member: the guarantees that change are listed in
docs/scaling.md), and only the foreign keys Citus can check stay: to reference tables, and from
a member's rows to `members`. Idempotent: tables already in Citus's metadata are left alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import URL, Connection, create_engine, text

REFERENCE_TABLES = (
    "partners",
    "rate_versions",
    "api_keys",
    "accounts",
    "identifier_keys",
    "signing_keys",
    "promotions",
    "promotion_versions",
    "promotion_catalogue",
)
# Co-located with members, by this column.
MEMBER_TABLES = {
    "members": "member_id",
    "member_accounts": "member_id",
    "journal_transactions": "member_id",
    "postings": "member_id",
    "lots": "member_id",
    "lot_consumptions": "member_id",
    "lot_expiries": "member_id",
    "earn_bonuses": "member_id",
    "holds": "member_id",
    "idempotency_keys": "member_id",
    "events": "member_id",
    "tier_qualifying_months": "member_id",
    "member_tiers": "member_id",
    "tier_changes": "member_id",
    "member_profiles": "member_id",
    "member_consents": "member_id",
    "consent_events": "member_id",
    "profile_reads": "member_id",
    "member_audit_events": "member_id",
    "member_requests": "member_id",
    "referral_codes": "member_id",
    "referrals": "referred_member_id",
    "promotion_member_grants": "member_id",
    "promotion_earn_grants": "member_id",
}
LOOKUP_TABLES = {
    "partner_links": "partner_customer_id",
    "member_identifiers": "identifier_hmac",
}
COORDINATOR_TABLES = (
    "settlement_statements",
    "settlement_entries",
    "settlement_acknowledgements",
    "reconciliation_runs",
    "reconciliation_exceptions",
    "reconciliation_jobs",
    "reconciliation_leases",
    "partner_daily_sales",
)
DISTRIBUTED_TABLES = {**MEMBER_TABLES, **LOOKUP_TABLES}


def is_citus(connection: Connection) -> bool:
    """Whether the database runs the Citus extension."""
    if connection.dialect.name != "postgresql":
        return False
    query = text("SELECT 1 FROM pg_extension WHERE extname = 'citus'")
    return connection.execute(query).first() is not None


def distribute(connection: Connection) -> list[str]:
    """Lay the schema out on Citus (see the module docstring); return the tables it changed."""
    known = set(
        connection.execute(text("SELECT logicalrelid::regclass::text FROM pg_dist_partition"))
        .scalars()
        .all()
    )
    pending = [
        table
        for table in (*REFERENCE_TABLES, *DISTRIBUTED_TABLES, *COORDINATOR_TABLES)
        if table not in known
    ]
    if not pending:
        return []
    # Foreign keys to reference tables need one connection per node for the whole transaction.
    connection.execute(text("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"))
    foreign_keys = _drop_foreign_keys(connection)
    for table, column in DISTRIBUTED_TABLES.items():
        if table in pending:
            _key_by(connection, table, column)
    for table in REFERENCE_TABLES:
        if table in pending:
            connection.execute(text("SELECT create_reference_table(:t)"), {"t": table})
    for table, column in DISTRIBUTED_TABLES.items():
        if table in pending:
            colocate = "members" if table in MEMBER_TABLES and table != "members" else "none"
            connection.execute(
                text("SELECT create_distributed_table(:t, :c, colocate_with => :w)"),
                {"t": table, "c": column, "w": colocate},
            )
    for table in COORDINATOR_TABLES:
        if table in pending:
            connection.execute(text("SELECT citus_add_local_table_to_metadata(:t)"), {"t": table})
    for table, name, definition in foreign_keys:
        if _is_supported(table, definition):
            connection.execute(text(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {definition}'))
    return pending


def _drop_foreign_keys(connection: Connection) -> list[tuple[str, str, str]]:
    """Drop every foreign key of the schema; return (table, name, definition) of each."""
    rows = connection.execute(
        text(
            "SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)"
            " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
            " WHERE c.contype = 'f' AND n.nspname = current_schema() ORDER BY 1, 2"
        )
    ).all()
    for table, name, _ in rows:
        connection.execute(text(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"'))
    return [(str(table), str(name), str(definition)) for table, name, definition in rows]


def _is_supported(table: str, definition: str) -> bool:
    """Whether Citus can check this foreign key: to a reference table, or from a member's row
    to its member (on the distribution column, co-located)."""
    referenced = definition.split(" REFERENCES ", 1)[1].split("(", 1)[0].strip()
    if referenced in REFERENCE_TABLES:
        return True
    if referenced in COORDINATOR_TABLES and table in COORDINATOR_TABLES:
        return True
    if referenced == "members" and table in MEMBER_TABLES:
        column = MEMBER_TABLES[table]
        return definition.startswith(f"FOREIGN KEY ({column}) REFERENCES members(member_id)")
    return False


def _key_by(connection: Connection, table: str, column: str) -> None:
    """Give every primary key and unique constraint of `table` the distribution column."""
    rows = connection.execute(
        text(
            "SELECT c.conname, c.contype,"
            " array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, o)"
            " JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o)"
            " FROM pg_constraint c WHERE c.conrelid = CAST(:t AS regclass)"
            " AND c.contype IN ('p', 'u')"
        ),
        {"t": table},
    ).all()
    for name, kind, columns in rows:
        if column in columns:
            continue
        keyed = ", ".join((column, *columns))
        constraint = "PRIMARY KEY" if kind == "p" else "UNIQUE"
        connection.execute(text(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"'))
        connection.execute(
            text(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {constraint} ({keyed})')
        )


def member_shards(connection: Connection, member_ids: Sequence[str]) -> dict[str, int]:
    """The shard of `members` (and of every table co-located with it) that holds each member
    id, from Citus's metadata on the coordinator: no worker is asked, and the id need not
    exist yet. The group committer splits its groups by it (operations/group_commit.py)."""
    rows = connection.execute(
        text(
            "SELECT m, get_shard_id_for_distribution_column('members', m)"
            " FROM unnest(CAST(:ids AS text[])) AS m"
        ),
        {"ids": list(member_ids)},
    )
    return {str(member_id): int(shard_id) for member_id, shard_id in rows}


def linked_members(
    connection: Connection, customers: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The member linked to each (partner id, partner customer id) that has one: one read,
    pruned to the shards of `partner_links` that hold those customer ids."""
    rows = connection.execute(
        text(
            "SELECT partner_id, partner_customer_id, member_id FROM partner_links"
            " WHERE partner_customer_id = ANY(CAST(:customers AS text[]))"
        ),
        {"customers": sorted({customer_id for _, customer_id in customers})},
    )
    wanted = set(customers)
    return {
        (str(partner_id), str(customer_id)): str(member_id)
        for partner_id, customer_id, member_id in rows
        if (partner_id, customer_id) in wanted
    }


def one_connection_per_node(connection: Connection) -> None:
    """For the rest of the transaction, reach each node over one connection: a transaction
    that reads distributed tables in parallel and then writes a coordinator table with keys
    to reference tables is refused otherwise ("there was a parallel operation on a
    distributed table"), and one that writes and reads back its rows over several
    connections may miss some (Citus issue #3426). Settlement runs this way."""
    connection.execute(text("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'"))
    connection.execute(text("SET LOCAL citus.max_adaptive_executor_pool_size TO 1"))


def allow_repartition_joins(connection: Connection) -> None:
    """For the rest of the transaction, let Citus join distributed tables on columns other
    than the member (lots with the transactions that consumed, expired or reversed them,
    which after a merge are another member's): each shard's rows are re-partitioned between
    the workers by the join column. Reports run this way (docs/scaling.md states the cost)."""
    connection.execute(text("SET LOCAL citus.enable_repartition_joins TO on"))


def worker_nodes(connection: Connection) -> list[tuple[str, int]] | None:
    """The active workers of a Citus coordinator; None when the server is not one."""
    if not is_citus(connection):
        return None
    rows = connection.execute(
        text("SELECT node_name, node_port FROM citus_get_active_worker_nodes()")
    )
    return [(str(host), int(port)) for host, port in rows]


def join_cluster(
    url: URL, name: str, workers: list[tuple[str, int]], shard_count: int | None = None
) -> None:
    """Make the new database `name` of a coordinator (at `url`) a Citus cluster of its own:
    the database and the extension on every worker, and the nodes registered in it (Citus's
    metadata is per database). `shard_count` sets the shards of its distributed tables."""
    for host, port in workers:
        with _on_node(url, "postgres", host, port) as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{name}"'))
        with _on_node(url, name, host, port) as connection:
            connection.execute(text("CREATE EXTENSION citus"))
    with _on_node(url, name, str(url.host), int(url.port or 5432)) as connection:
        connection.execute(text("CREATE EXTENSION citus"))
        if shard_count is not None:
            connection.execute(
                text(f'ALTER DATABASE "{name}" SET citus.shard_count = {int(shard_count)}')
            )
        connection.execute(
            text("SELECT citus_set_coordinator_host(:host, :port)"),
            {"host": url.host, "port": url.port or 5432},
        )
        for host, port in workers:
            connection.execute(
                text("SELECT citus_add_node(:host, :port)"), {"host": host, "port": port}
            )


def drop_on_workers(url: URL, name: str, workers: list[tuple[str, int]]) -> None:
    for host, port in workers:
        with _on_node(url, "postgres", host, port) as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextmanager
def _on_node(url: URL, database: str, host: str, port: int) -> Iterator[Connection]:
    engine = create_engine(
        url.set(host=host, port=port, database=database), isolation_level="AUTOCOMMIT"
    )
    try:
        with engine.connect() as connection:
            yield connection
    finally:
        engine.dispose()
