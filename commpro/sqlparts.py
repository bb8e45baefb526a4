"""Filters composed from named SQL fragments, for lists whose filters are all optional.

One catch-all statement (`$2 IS NULL OR col = $2`) gets a generic plan after a few executions on
a connection, and in that plan the cursor and the date range are only filters after an index
scan on the user: at a million rows it reads and throws away most of them. A statement per
combination of the filters actually present keeps every bound in the index scan, whatever plan
PostgreSQL caches. The fragments are constants of the store that owns them; values are always
`$n` parameters, never text in the SQL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def and_filters(fragments: Mapping[str, str], values: Mapping[str, Any], first: int) -> tuple[str, list[Any]]:
    """(" AND ..." for each fragment whose value is not None, its arguments).

    A fragment's `{}` are its parameters, numbered from `$first` in order; a tuple value fills
    several (`(created_at, id) < ({}, {})`).
    """
    sql: list[str] = []
    args: list[Any] = []
    for name, fragment in fragments.items():
        value = values.get(name)
        if value is None:
            continue
        parts = value if isinstance(value, tuple) else (value,)
        numbers = range(first + len(args), first + len(args) + len(parts))
        sql.append(" AND " + fragment.format(*(f"${n}" for n in numbers)))
        args.extend(parts)
    return "".join(sql), args
