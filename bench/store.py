"""The store at scale (issue 13): a store grown to millions of rows, on PostgreSQL and SQLite.

Each store is migrated by `open_store`, then grown with bulk SQL (its indexes dropped and
built again from their own definitions, which is minutes faster than growing them row by
row, and leaves them as compact as a REINDEX would). Against it the phase measures a real
consumer's rate (vs an empty store of the same kind), the read API's latency, the plans of
the reads and of the retention queries, and the longest commit a writer waits while the
janitor expires messages and purges Idempotency-Keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import re
import sqlite3
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
from sqlalchemy import Engine, event, func, select

from bench import bare
from bench.common import Row, stop
from hareway.store import DeliveryRecord, SqlStore, open_store
from hareway.store.janitor import KEYS, RETENTION, Janitor, SweepReport
from hareway.store.schema import messages
from hareway.topology import parse_topology

if TYPE_CHECKING:
    from bench.__main__ import Bench

# The sizes; `--store-rows` runs smaller.
TARGET_ROWS = {"PostgreSQL": 5_000_000, "SQLite": 2_000_000}
KEYS_AT_TARGET = 1_000_000  # expired Idempotency-Keys, scaled with the rows
QUEUES = 10  # 8 filler queues, one with dead letters, and the measured one (the newest rows)
RETENTION_YAML = "retention: {max_age: 1d, dedupe_window: 2d}\n"
READS = 300  # per read; the first WARM (past PostgreSQL's 5 custom plans) are not counted
WARM = 20
READ_BUDGET_S = 15.0
BATCH = 100
_NOTE = "x" * 190
BODY = json.dumps(
    {"order_id": 1, "customer": "c-1", "items": [{"sku": "sku-1", "qty": 2}], "note": _NOTE}
).encode()
_FORMAT = '{"order_id":%s,"customer":"c-%s","items":[{"sku":"sku-%s","qty":2}],"note":"%s"}'
_COLUMNS = (
    "queue, message_id, exchange, routing_key, headers, content_type, body, attempts, status,"
    " last_error, published_at, persisted_at, body_sha256"
)
# Rows 1..old are 3 days to 1 day + 1 hour old (half of them past the dedupe window), the
# rest from the last hour; a dead letter is 1 in 10 of the dead-letter queue's rows.
_PG_GROW = f"""
INSERT INTO messages ({_COLUMNS})
SELECT q.queue, md5($6::text || i)::uuid::text, $6::text, 'order.created', '{{}}',
  'application/json', b.body, CASE WHEN q.dead THEN 5 ELSE 1 END,
  CASE WHEN q.dead THEN 'dead_lettered' ELSE 'persisted' END,
  CASE WHEN q.dead THEN 'handler failed: ValueError' END, t.ts, t.ts, sha256(b.body)
FROM generate_series($1::bigint, $2::bigint) AS i,
LATERAL (SELECT CASE WHEN i > $3::bigint THEN $7::text WHEN i % 9 = 8 THEN $8::text
   ELSE $6::text || '.f' || (i % 9) END AS queue, i <= $3::bigint AND i % 90 = 8 AS dead) AS q,
LATERAL (SELECT convert_to(format('{_FORMAT}', i, i % 1000, i % 77, '{_NOTE}'), 'UTF8') AS body) b,
LATERAL (SELECT CASE WHEN i <= $4::bigint
   THEN $9::timestamptz - interval '3 days' + (i::float8 / $4::bigint) * interval '47 hours'
   ELSE $9::timestamptz - interval '1 hour'
     + ((i - $4::bigint)::float8 / greatest($5::bigint - $4::bigint, 1)) * interval '1 hour'
   END AS ts) AS t
"""
_PG_KEYS = """
INSERT INTO idempotency_keys (key, request_hash, status_code, response, created_at, expires_at)
SELECT 'k-' || md5($3::text || i), md5(i::text), 202, convert_to('{"accepted":1}', 'UTF8'),
  $4::timestamptz - interval '2 days', $4::timestamptz - interval '1 day' + i * interval '1 ms'
FROM generate_series($1::bigint, $2::bigint) AS i
"""
_SQLITE_TS = "strftime('%Y-%m-%d %H:%M:%f', {}) || '000'"  # SQLAlchemy's format, UTC
_SQLITE_GROW = f"""
WITH RECURSIVE s(i) AS (SELECT :start UNION ALL SELECT i + 1 FROM s WHERE i < :end),
r AS (SELECT i, CASE WHEN i > :filler THEN :measured WHEN i % 9 = 8 THEN :dead
     ELSE :prefix || '.f' || (i % 9) END AS queue, i <= :filler AND i % 90 = 8 AS dead,
   CAST(printf('{_FORMAT}', i, i % 1000, i % 77, '{_NOTE}') AS BLOB) AS body,
   {
    _SQLITE_TS.format(
        "CASE WHEN i <= :old THEN julianday(:now) - 3 + (CAST(i AS REAL) / :old) * 47.0 / 24"
        " ELSE julianday(:now) - 1.0 / 24 + CAST(i - :old AS REAL) / max(:n - :old, 1) / 24 END"
    )
} AS ts FROM s)
INSERT INTO messages ({_COLUMNS})
SELECT queue, uuid_of(:prefix || i), :prefix, 'order.created', '{{}}', 'application/json', body,
  CASE WHEN dead THEN 5 ELSE 1 END, CASE WHEN dead THEN 'dead_lettered' ELSE 'persisted' END,
  CASE WHEN dead THEN 'handler failed: ValueError' END, ts, ts, sha256(body) FROM r
"""
_SQLITE_KEYS = f"""
WITH RECURSIVE s(i) AS (SELECT :start UNION ALL SELECT i + 1 FROM s WHERE i < :end)
INSERT INTO idempotency_keys (key, request_hash, status_code, response, created_at, expires_at)
SELECT 'k-' || uuid_of(:prefix || i), uuid_of(i), 202, CAST('{{"accepted":1}}' AS BLOB),
  {_SQLITE_TS.format("julianday(:now) - 2")},
  {_SQLITE_TS.format("julianday(:now) - 1 + i / 86400000.0")} FROM s
"""
CHUNK = 500_000


@dataclass
class Grown:
    rows: int
    keys: int
    old: int
    prefix: str
    measured: str
    dead: str
    seconds: float = 0.0
    middle: str = ""  # a cursor half way through the measured queue
    message_id: str = ""


async def store_at_scale(bench: Bench, rows: dict[str, int]) -> list[Row]:
    out: list[Row] = []
    async with bench.postgres_database() as empty, bench.postgres_database() as grown:
        if empty and grown:
            out += await _one(bench, "PostgreSQL", empty, grown, rows["PostgreSQL"])
    empty_file, grown_file = bench.work / "store-empty.db", bench.work / "store-grown.db"
    try:
        out += await _one(
            bench, "SQLite", _sqlite_url(empty_file), _sqlite_url(grown_file), rows["SQLite"]
        )
    finally:
        for file in (empty_file, grown_file):
            for path in (
                file,
                file.with_name(file.name + "-wal"),
                file.with_name(file.name + "-shm"),
            ):
                path.unlink(missing_ok=True)
    return out


def _sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def _one(bench: Bench, label: str, empty: str, grown_url: str, rows: int) -> list[Row]:
    sqlite = label == "SQLite"
    target = TARGET_ROWS[label]
    keys = max(1, KEYS_AT_TARGET * rows // target)
    layout = Grown(rows, keys, rows // 5, bench.prefix, bench.queue, f"{bench.prefix}.dead")
    for url in (empty, grown_url):
        await (await open_store(url)).close()  # migrated by hareway itself
    _say(f"growing {label} to {rows:,} rows and {keys:,} keys")
    started = time.perf_counter()
    if sqlite:
        await asyncio.to_thread(_grow_sqlite, grown_url.split("///", 1)[1], layout)
    else:
        await _grow_postgres(_plain(grown_url), layout)
    layout.seconds = time.perf_counter() - started
    _say(f"grown in {layout.seconds:.0f} s; the consumer, empty vs grown")
    size = f"{rows / 1e6:g}M rows"
    out = [
        Row(
            f"store {label}: grow to {size} + {keys:,} expired keys (bulk SQL)", layout.seconds, "s"
        )
    ]
    # Consumer rate: a real `python -m consumers`, empty vs grown, best of 2 each, alternating.
    best = {empty: 0.0, grown_url: 0.0}
    for _ in range(2):
        for url in best:
            best[url] = max(best[url], await _consumer_rate(bench, url, bench.consume_count))
    ratio = best[grown_url] / best[empty]
    floor = 0.9 if sqlite else 0.95
    out.append(
        Row(
            f"store {label}: `python -m consumers` at {size} "
            f"({bench.consume_count:,} msgs, best of 2)",
            best[grown_url],
            "msg/s",
            f"empty store {best[empty]:,.0f} msg/s",
            ratio,
            f">= {floor} at {target / 1e6:g}M",
            ratio >= floor,
        )
    )
    store = await open_store(grown_url)
    try:
        await _locate(store, layout)
        _say(f"consumer {best[grown_url]:,.0f} vs {best[empty]:,.0f} msg/s; the reads")
        out += await _reads(bench, label, store, layout, grown_url)
        plans = await _plans(store, layout, grown_url)
        missed = list(dict.fromkeys(name.split(" [")[0] for name, ok, _ in plans if not ok))
        print(f"\n## {label} plans at {size}\n")
        if sqlite:
            with contextlib.closing(sqlite3.connect(grown_url.split("///", 1)[1])) as db:
                print(f"PRAGMA auto_vacuum = {db.execute('PRAGMA auto_vacuum').fetchone()[0]}\n")
        for name, ok, text in plans:
            print(f"### {name}{'' if ok else '  (NOT the expected index)'}\n{text}\n")
        out.append(
            Row(
                f"store {label}: plans on the expected index ({', '.join(missed) or 'all'}"
                f"{' miss' if missed else ''})",
                sum(ok for _, ok, _ in plans),
                f"of {len(plans)}",
                target="all",
                ok=not missed,
            )
        )
        _say("the writer beside the janitor")
        out += await _stalls(bench, label, store, grown_url)
    finally:
        await store.close()
    for row in out:  # now, not only in the table at the end: this phase takes minutes
        met = "" if row.ok is None else (" (met)" if row.ok else " (MISSED)")
        _say(f"{row.name}: {row.value:,.1f} {row.unit}{met}")
    return out


def _say(what: str) -> None:
    print(f"store {time.strftime('%H:%M:%S')}: {what}", flush=True)


def _plain(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


# -- growing --------------------------------------------------------------------------------
async def _grow_postgres(url: str, layout: Grown) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("SET maintenance_work_mem = '256MB'")
        now = datetime.now(UTC)
        for table, total, insert, args in (
            (
                "messages",
                layout.rows,
                _PG_GROW,
                (
                    layout.rows - layout.rows // QUEUES,
                    layout.old,
                    layout.rows,
                    layout.prefix,
                    layout.measured,
                    layout.dead,
                    now,
                ),
            ),
            ("idempotency_keys", layout.keys, _PG_KEYS, (layout.prefix, now)),
        ):
            rebuild = await _drop_indexes(connection, table)
            for start in range(1, total + 1, CHUNK):
                await connection.execute(insert, start, min(start + CHUNK - 1, total), *args)
            for statement in rebuild:
                await connection.execute(statement)
        # What autovacuum would have done on a store that grew over weeks (and would do
        # in the middle of the measurements otherwise).
        await connection.execute("VACUUM (ANALYZE) messages, idempotency_keys")
        # Nor should the measurements share the disk with the checkpoint the grow calls for.
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


async def _drop_indexes(connection: asyncpg.Connection, table: str) -> list[str]:
    """Drop the table's indexes and key constraints; the statements that build them again."""
    constraints = await connection.fetch(
        "SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint"
        " WHERE conrelid = $1::regclass AND contype IN ('p', 'u')",
        table,
    )
    indexes = await connection.fetch(
        "SELECT indexrelid::regclass::text AS name, pg_get_indexdef(indexrelid) AS def"
        " FROM pg_index WHERE indrelid = $1::regclass AND indexrelid NOT IN"
        " (SELECT conindid FROM pg_constraint WHERE conrelid = $1::regclass)",
        table,
    )
    for row in indexes:
        await connection.execute(f'DROP INDEX "{row["name"]}"')
    for row in constraints:
        await connection.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{row["conname"]}"')
    return [
        f'ALTER TABLE {table} ADD CONSTRAINT "{r["conname"]}" {r["def"]}' for r in constraints
    ] + [r["def"] for r in indexes]


def _grow_sqlite(path: str, layout: Grown) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA synchronous=OFF")  # the grow only: the store keeps FULL
        connection.create_function(
            "sha256", 1, lambda b: hashlib.sha256(b).digest(), deterministic=True
        )
        connection.create_function(
            "uuid_of",
            1,
            lambda s: str(uuid.UUID(hashlib.md5(str(s).encode()).hexdigest())),
            deterministic=True,
        )
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
        for table, total, insert, args in (
            (
                "messages",
                layout.rows,
                _SQLITE_GROW,
                {
                    "filler": layout.rows - layout.rows // QUEUES,
                    "old": layout.old,
                    "n": layout.rows,
                    "prefix": layout.prefix,
                    "measured": layout.measured,
                    "dead": layout.dead,
                    "now": now,
                },
            ),
            ("idempotency_keys", layout.keys, _SQLITE_KEYS, {"prefix": layout.prefix, "now": now}),
        ):
            # The named indexes only: SQLite cannot drop a table's own unique ones.
            rebuild = connection.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
                " AND sql IS NOT NULL",
                (table,),
            ).fetchall()
            for name, _ in rebuild:
                connection.execute(f'DROP INDEX "{name}"')
            for start in range(1, total + 1, CHUNK):
                connection.execute("BEGIN")
                connection.execute(
                    insert, {**args, "start": start, "end": min(start + CHUNK - 1, total)}
                )
                connection.execute("COMMIT")
            for _, sql in rebuild:
                connection.execute(sql)
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()


async def _locate(store: SqlStore, layout: Grown) -> None:
    where = (messages.c.queue == layout.measured, messages.c.status == "persisted")
    async with store.engine.connect() as connection:
        count = (await connection.execute(select(func.count()).where(*where))).scalar_one()
        row = (
            await connection.execute(
                select(messages.c.id, messages.c.message_id)
                .where(*where)
                .order_by(messages.c.id)
                .offset(count // 2)
                .limit(1)
            )
        ).one()
    layout.middle, layout.message_id = str(row.id), row.message_id


# -- the consumer ---------------------------------------------------------------------------
async def _consumer_rate(bench: Bench, url: str, count: int) -> float:
    """`python -m consumers` draining `count` messages of the bench's queue into `url`;
    the rate from its first commit to its last, as the consumers phase counts it."""
    store = await open_store(url)
    process = None
    newest = func.coalesce(func.max(messages.c.id), 0)
    try:
        async with store.engine.connect() as connection:
            before = (await connection.execute(select(newest))).scalar_one()
        await bare.fill(bench.url, bench.exchange, "order.created", count)
        process = await bench.spawn(
            ["-m", "consumers", "--queue", bench.queue], bench.gateway_env(url), "store-consumer"
        )
        new = messages.c.id > before
        deadline = time.monotonic() + 120
        while True:
            async with store.engine.connect() as connection:
                done = (await connection.execute(select(func.count()).where(new))).scalar_one()
            if done >= count:
                break
            if time.monotonic() > deadline or process.returncode is not None:
                raise SystemExit(f"consumer stalled: see {bench.work / 'store-consumer.log'}")
            await asyncio.sleep(0.2)
        async with store.engine.begin() as connection:
            first, last = (
                await connection.execute(
                    select(
                        func.min(messages.c.persisted_at), func.max(messages.c.persisted_at)
                    ).where(new)
                )
            ).one()
            await connection.execute(messages.delete().where(new))
    finally:
        if process is not None:
            await stop(process)
        await store.close()
    span = (last - first).total_seconds()
    return count / span if span > 0 else float("inf")


# -- the reads ------------------------------------------------------------------------------
async def _timed(call: Callable[[], Awaitable[object]]) -> tuple[float, float, int]:
    """p50 and p99 in ms of READS calls after WARM, or of as many as fit in READ_BUDGET_S
    (a read that walks millions of rows would take the phase's whole time otherwise)."""
    took = []
    deadline = time.monotonic() + READ_BUDGET_S
    for index in range(READS + WARM):
        started = time.perf_counter()
        await call()
        if index >= WARM or time.monotonic() > deadline:
            took.append((time.perf_counter() - started) * 1000)
        if time.monotonic() > deadline and len(took) >= 5:
            break
    took.sort()
    return statistics.median(took), _p99(took), len(took)


def _runs(count: int) -> str:
    return "" if count >= READS else f", only {count} runs in {READ_BUDGET_S:g} s"


async def _reads(bench: Bench, label: str, store: SqlStore, layout: Grown, url: str) -> list[Row]:
    limit = 10.0 if label == "PostgreSQL" else 20.0
    q, dead, middle = layout.measured, layout.dead, layout.middle
    store_reads: list[tuple[str, Callable[[], Awaitable[object]], str, str]] = [
        ("page(q, None, 100)", lambda: store.page(q, None, 100), "/v1/queues/{q}/messages", ""),
        (
            "page(q, mid-queue cursor, 100)",
            lambda: store.page(q, middle, 100),
            "/v1/queues/{q}/messages",
            f"?after={middle}",
        ),
        (
            "dead_letters(q with none, None, 100)",
            lambda: store.dead_letters(q, None, 100),
            "/v1/queues/{q}/dead-letters",
            "",
        ),
        (
            "dead_letters(q with some, None, 100)",
            lambda: store.dead_letters(dead, None, 100),
            "/v1/queues/{dlq}/dead-letters",
            "",
        ),
        (
            "deliveries(message_id)",
            lambda: store.deliveries(layout.message_id),
            "/v1/messages/{id}",
            "",
        ),
    ]
    out = []
    for name, call, _, _ in store_reads:
        p50, p99, count = await _timed(call)
        paged = not name.startswith("deliveries")
        out.append(
            Row(
                f"store {label} {name}: p50 {p50:.2f} ms{_runs(count)}",
                p99,
                "ms p99",
                target=f"<= {limit:g} ms" if paged else "",
                ok=p99 <= limit if paged else None,
            )
        )
    argv = ["-m", "gateway", "--port", "{port}"]
    async with (
        bench.server(argv, bench.gateway_env(url), "store-gateway") as base,
        httpx.AsyncClient(base_url=base) as client,
    ):
        for _, _, route, query in store_reads:
            path = route.format(q=q, dlq=dead, id=layout.message_id) + query

            async def get(path: str = path) -> None:
                (await client.get(path)).raise_for_status()

            p50, p99, count = await _timed(get)
            out.append(
                Row(
                    f"store {label} HTTP GET {route}{query and '?after=<mid-queue>'}: "
                    f"p50 {p50:.2f} ms{_runs(count)}",
                    p99,
                    "ms p99",
                )
            )
    return out


# -- the plans ------------------------------------------------------------------------------
_SENTINEL = datetime(2000, 1, 1, tzinfo=UTC)
_SENTINEL_LIMIT = 4321


@contextlib.contextmanager
def _captured(engine: Engine) -> Iterator[list[tuple[str, Any]]]:
    seen: list[tuple[str, Any]] = []

    def hook(_c: Any, _cursor: Any, statement: str, parameters: Any, _x: Any, _m: bool) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE", "WITH")):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", hook)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", hook)


async def _plans(store: SqlStore, layout: Grown, url: str) -> list[tuple[str, bool, str]]:
    """Each read and retention statement as the store sends it, explained on the grown store.
    The retention ones are captured from calls that match nothing (a moment long past), then
    explained with the moment and batch a sweep uses."""
    now = datetime.now(UTC)
    before = {"expire": now - timedelta(days=1), "forget": now - timedelta(days=2), "keys": now}
    q = layout.measured
    expect_list = "ix_messages_queue_status_id"
    calls: list[tuple[str, Callable[[], Awaitable[object]], list[str], str]] = [
        ("page first", lambda: store.page(q, None, 100), [expect_list], ""),
        ("page after cursor", lambda: store.page(q, layout.middle, 100), [expect_list], ""),
        ("dead_letters", lambda: store.dead_letters(layout.dead, None, 100), [expect_list], ""),
        (
            "deliveries",
            lambda: store.deliveries(layout.message_id),
            ["ix_messages_message_id", "ix_conflicts_message_id"],
            "",
        ),
        (
            "expire_before",
            lambda: store.expire_before(
                f"{layout.prefix}.f0", "persisted", _SENTINEL, _SENTINEL_LIMIT
            ),
            ["ix_messages_queue_status_persisted_at"] * 2,
            "expire",
        ),
        (
            "forget_before",
            lambda: store.forget_before(f"{layout.prefix}.f0", _SENTINEL, _SENTINEL_LIMIT),
            [
                "ix_messages_queue_status_persisted_at",
                "ix_conflicts_queue_persisted_at",
                "ix_redrives_queue_redriven_at",
            ],
            "forget",
        ),
        (
            "purge_keys",
            lambda: store.purge_keys(_SENTINEL, _SENTINEL_LIMIT),
            ["ix_idempotency_keys_expires_at"],
            "keys",
        ),
        ("queues (loose index scan)", store.queues, [""], ""),
    ]
    out = []
    for name, call, expected, moment in calls:
        with _captured(store.engine.sync_engine) as seen:
            await call()
        statements = [s for s in seen if "expiry_marks" not in s[0]]
        for index, (statement, parameters) in enumerate(statements):
            args = [_real(value, before.get(moment, now)) for value in parameters]
            want = expected[index] if index < len(expected) else ""
            if url.startswith("sqlite"):
                text = _explain_sqlite(url.split("///", 1)[1], statement, args)
                ok = not want or want in text
                out.append((f"{name} [{index + 1}]", ok, text))
            else:
                for mode in ("custom", "after 5 executions"):
                    text = await _explain_postgres(_plain(url), statement, args, mode)
                    ok = (not want or want in text) and not _big_seq_scan(text)
                    out.append((f"{name} [{index + 1}] {mode}", ok, text))
    return out


# A sequential scan of a table this small is the planner choosing rightly (the bench's
# conflicts, redrives and pushes tables are nearly empty): only bigger ones are misses.
_SMALL_TABLE_ROWS = 1_000


def _big_seq_scan(plan: str) -> bool:
    return any(
        int(rows) >= _SMALL_TABLE_ROWS
        for rows in re.findall(r"Seq Scan on \S+(?: \S+)?\s+\(cost=[\d.]+ rows=(\d+)", plan)
    ) or bool(re.search(r"Seq Scan(?! on \S+(?: \S+)?\s+\(cost=)", plan))


def _real(value: Any, moment: datetime) -> Any:
    if value == _SENTINEL:
        return moment
    if isinstance(value, str) and value.startswith("2000-01-01 00:00:00"):
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f")
    if value == _SENTINEL_LIMIT:
        return 1000
    return value


def _explain_sqlite(path: str, statement: str, args: list[Any]) -> str:
    connection = sqlite3.connect(path)
    try:
        rows = connection.execute(f"EXPLAIN QUERY PLAN {statement}", args).fetchall()
    finally:
        connection.close()
    return "\n".join(f"{'  ' * (parent > 0)}{detail}" for _, parent, _, detail in rows)


def _literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool | int | float):
        return str(value)
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'::timestamptz"
    if isinstance(value, bytes):
        return f"'\\x{value.hex()}'::bytea"
    return "'" + str(value).replace("'", "''") + "'"


async def _explain_postgres(url: str, statement: str, args: list[Any], mode: str) -> str:
    """`custom`: the plan for these values. `after 5 executions`: what a prepared statement
    runs from its sixth execution on (the generic plan, if PostgreSQL prefers it then)."""
    connection = await asyncpg.connect(url)
    try:
        transaction = connection.transaction()
        await transaction.start()  # rolled back: the UPDATEs and DELETEs change nothing
        try:
            if mode == "plan":  # the plan alone, for these values
                rows = await connection.fetch(f"EXPLAIN {statement}", *args)
            elif mode == "custom":
                rows = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", *args)
            else:
                await connection.execute(f"PREPARE p AS {statement}")
                execute = (
                    f"EXECUTE p({', '.join(_literal(a) for a in args)})" if args else "EXECUTE p"
                )
                for _ in range(5):
                    await connection.execute(execute)
                rows = await connection.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {execute}")
        finally:
            await transaction.rollback()
    finally:
        await connection.close()
    return "\n".join(row[0] for row in rows)


# -- the writer's stalls --------------------------------------------------------------------
async def _writer(store: SqlStore, queue: str, until: Callable[[], bool]) -> list[float]:
    took = []
    while not until():
        records = [
            DeliveryRecord(
                queue, uuid.uuid4().hex, "bench", "order.created", {}, "application/json", BODY, 1
            )
            for _ in range(BATCH)
        ]
        started = time.perf_counter()
        async with store.transaction() as tx:
            await tx.write(records)
        took.append((time.perf_counter() - started) * 1000)
    return sorted(took)


async def _stalls(bench: Bench, label: str, store: SqlStore, url: str) -> list[Row]:
    queue = f"{bench.prefix}.writer"
    deadline = time.monotonic() + 5
    alone = await _writer(store, queue, lambda: time.monotonic() > deadline)
    out = [
        Row(
            f"store {label}: writer alone, {BATCH} records a commit, p99 {_p99(alone):.1f} ms",
            alone[-1],
            "ms max",
        )
    ]
    topology = parse_topology(RETENTION_YAML)
    for chores in (KEYS, RETENTION):
        janitor = Janitor(store, topology, chores=chores, every_s=3600)
        with _slowest(store.engine.sync_engine) as slowest:
            sweep: asyncio.Task[SweepReport] = asyncio.create_task(janitor.sweep())
            took = await _writer(store, queue, sweep.done)
        report = sweep.result()
        for what, (ms, statement, parameters) in sorted(slowest.items()):
            janitors = what.startswith(("UPDATE", "DELETE"))
            _say(f"{chores}: the slowest {what}: {ms:.0f} ms{f', {parameters}' * janitors}")
            if janitors and label == "PostgreSQL" and "leases" not in what:
                print(await _explain_postgres(_plain(url), statement, list(parameters), "plan"))
        done = report.purged if chores == KEYS else report.expired + report.forgotten
        what = (
            f"{report.purged:,} keys purged"
            if chores == KEYS
            else f"{report.expired:,} expired + {report.forgotten:,} forgotten"
        )
        out.append(
            Row(
                f"store {label}: writer during the {chores} sweep ({what} in "
                f"{report.seconds:.1f} s, {done / report.seconds:,.0f} rows/s, "
                f"{report.transactions} transactions, the longest "
                f"{report.longest_s * 1000:.0f} ms), p99 {_p99(took):.1f} ms",
                took[-1] if took else 0.0,
                "ms max",
                "writer alone",
                (took[-1] / alone[-1]) if took else None,
                "<= 100 ms",
                bool(took) and took[-1] <= 100,
            )
        )
    return out


@contextlib.contextmanager
def _slowest(engine: Engine) -> Iterator[dict[str, tuple[float, str, Any]]]:
    """The slowest statement of each kind (its verb and table) while the block runs."""
    slowest: dict[str, tuple[float, str, Any]] = {}

    def before(conn: Any, _cursor: Any, _s: str, _p: Any, _x: Any, _m: bool) -> None:
        conn.info["bench_started"] = time.perf_counter()

    def after(conn: Any, _cursor: Any, statement: str, parameters: Any, _x: Any, _m: bool) -> None:
        ms = (time.perf_counter() - conn.info.pop("bench_started", time.perf_counter())) * 1000
        words = statement.split()
        kind = " ".join(words[:3] if words[0] in ("DELETE", "INSERT") else words[:2])
        if kind.startswith(("UPDATE", "DELETE", "INSERT")) and ms > slowest.get(kind, (0.0,))[0]:
            slowest[kind] = (ms, statement, parameters)

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield slowest
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def _p99(took: list[float]) -> float:
    return took[max(0, math.ceil(len(took) * 0.99) - 1)] if took else 0.0
