"""Counting the rows a statement reads while the database holds a crowd of other rows.

A statement that looks its rows up by key reads a few; one the planner turned into a hash
of a whole table reads the crowd as well.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

CROWD = 3000


async def add_crowd(conn: AsyncConnection[Any], rows: str, *analyse: str, **params: Any) -> None:
    """Insert :data:`CROWD` new members (the CTE ``m``) and ``rows``, an ``INSERT … SELECT``
    over ``m``; then analyse ``analyse``, so that plans count with the crowd."""
    await conn.execute(
        "WITH m AS (INSERT INTO members (created_at)"
        f"  SELECT now() FROM generate_series(1, {CROWD}) RETURNING id) " + rows,
        params,
    )
    await conn.commit()
    for table in analyse:
        await conn.execute(f"ANALYZE {table}")
    await conn.commit()


async def rows_read(conn: AsyncConnection[Any], *tables: str) -> dict[str, int]:
    """Rows of ``tables`` read so far by ``conn``'s transaction (sequential and by index).

    Use a connection of its own: a backend reports what it read in batches, so a pooled
    one could still hold earlier counts.
    """
    cur = await conn.execute(
        "SELECT relname, coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
        "  FROM pg_stat_xact_user_tables WHERE relname = ANY(%s)",
        (list(tables),),
    )
    return {str(name): int(n) for name, n in await cur.fetchall()}
