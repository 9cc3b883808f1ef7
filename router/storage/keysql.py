"""Virtual-key SQL and row conversions shared by both backends."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from router.storage.models import KEY_COLUMNS, KeyRecord, check_key_fields
from router.storage.queries import Dialect, Params

_JSON_FIELDS = ("allowed_models", "metadata")


def key_params(k: KeyRecord) -> list[Any]:
    values = []
    for column in KEY_COLUMNS:
        value = getattr(k, column)
        values.append(json.dumps(value) if column in _JSON_FIELDS else value)
    return values


def insert_key_sql(d: Dialect) -> str:
    p = Params(d)
    placeholders = ", ".join(p(None) for _ in KEY_COLUMNS)
    return f"INSERT INTO api_keys ({', '.join(KEY_COLUMNS)}) VALUES ({placeholders})"


def select_key_sql(d: Dialect, column: str | None) -> str:
    base = f"SELECT {', '.join(KEY_COLUMNS)} FROM api_keys"
    if column is None:
        return base + " ORDER BY created_at, id"
    return f"{base} WHERE {column} = {'$1' if d.numbered else '?'} ORDER BY created_at, id"


def update_key_sql(d: Dialect, key_id: str, updates: dict[str, Any]) -> tuple[str, list[Any]]:
    check_key_fields(updates)
    p = Params(d)
    sets = []
    for column, value in updates.items():
        sets.append(f"{column} = {p(json.dumps(value) if column in _JSON_FIELDS else value)}")
    return f"UPDATE api_keys SET {', '.join(sets)} WHERE id = {p(key_id)}", p.values


def revoke_key_sql(d: Dialect) -> str:
    if d.numbered:
        return "UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL"
    return "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL"


def row_to_key(row: Mapping[str, Any]) -> KeyRecord:
    values = {column: row[column] for column in KEY_COLUMNS}
    for column in _JSON_FIELDS:
        if isinstance(values[column], str):
            values[column] = json.loads(values[column])
    return KeyRecord(**values)
