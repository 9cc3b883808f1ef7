"""Versioned schema migrations, one list per backend; both describe the same logical schema.

Tables: ``usage_log`` (one row per request, ``request_id`` primary key), ``usage_daily`` (rollup per UTC day,
tenant, key, model; ``key_id`` is '' for requests without a key so it can be part of the primary key),
``usage_tags`` (one row per tag of a request, for grouping and filtering by tag), ``api_keys`` (virtual keys)
and ``schema_migrations`` (applied versions).
Append new versions; never edit old ones.
"""

from __future__ import annotations

_USAGE_COLUMNS = """
    request_id            TEXT PRIMARY KEY,
    ts                    {float} NOT NULL,
    route                 TEXT NOT NULL,
    key_id                TEXT,
    tenant                TEXT NOT NULL,
    end_user              TEXT,
    model                 TEXT NOT NULL,
    deployment            TEXT,
    provider              TEXT,
    cache                 TEXT NOT NULL,
    similarity            {float},
    prompt_tokens_client  INTEGER NOT NULL,
    prompt_tokens_sent    INTEGER NOT NULL,
    completion_tokens     INTEGER NOT NULL,
    cost_usd              {float} NOT NULL,
    saved_cache_usd       {float} NOT NULL,
    saved_compression_usd {float} NOT NULL,
    latency_ms            {float} NOT NULL,
    ttft_ms               {float},
    status                INTEGER NOT NULL,
    error_type            TEXT,
    stream                BOOLEAN NOT NULL,
    request_body          TEXT,
    response_body         TEXT
"""

_ROLLUP_COLUMNS = """
    day                   {day} NOT NULL,
    tenant                TEXT NOT NULL,
    key_id                TEXT NOT NULL DEFAULT '',
    model                 TEXT NOT NULL,
    requests              BIGINT NOT NULL DEFAULT 0,
    errors                BIGINT NOT NULL DEFAULT 0,
    prompt_tokens_client  BIGINT NOT NULL DEFAULT 0,
    prompt_tokens_sent    BIGINT NOT NULL DEFAULT 0,
    completion_tokens     BIGINT NOT NULL DEFAULT 0,
    cost_usd              {float} NOT NULL DEFAULT 0,
    saved_cache_usd       {float} NOT NULL DEFAULT 0,
    saved_compression_usd {float} NOT NULL DEFAULT 0,
    cache_hits            BIGINT NOT NULL DEFAULT 0,
    cache_lookups         BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (day, tenant, key_id, model)
"""

_KEY_COLUMNS = """
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    tenant         TEXT NOT NULL,
    secret_hash    TEXT NOT NULL UNIQUE,
    prefix         TEXT NOT NULL,
    allowed_models {json} NOT NULL,
    rpm            INTEGER,
    tpm            INTEGER,
    budget_usd     {float},
    budget_period  TEXT CHECK (budget_period IN ('daily', 'monthly')),
    expires_at     {float},
    metadata       {json} NOT NULL,
    created_at     {float} NOT NULL,
    revoked_at     {float}
"""

# Indexes serve the queries the API makes: keyset paging and retention by (ts, request_id), the tenant and
# key filters, and a key's spend since a time (budget seeding).
_INDEXES = """
CREATE INDEX usage_log_ts_idx ON usage_log (ts, request_id);
CREATE INDEX usage_log_tenant_ts_idx ON usage_log (tenant, ts, request_id);
CREATE INDEX usage_log_key_ts_idx ON usage_log (key_id, ts, request_id);
CREATE INDEX usage_daily_key_day_idx ON usage_daily (key_id, day);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant);
"""


def _initial(float_type: str, day_type: str, json_type: str) -> str:
    kinds = {"float": float_type, "day": day_type, "json": json_type}
    return (
        f"CREATE TABLE usage_log ({_USAGE_COLUMNS.format(**kinds)});\n"
        f"CREATE TABLE usage_daily ({_ROLLUP_COLUMNS.format(**kinds)});\n"
        f"CREATE TABLE api_keys ({_KEY_COLUMNS.format(**kinds)});\n" + _INDEXES
    )


# Version 3: why the cache hit or missed, for every lookup (the verifier's reason, below-floor, no-candidate, ...).
_CACHE_REASON = "ALTER TABLE usage_log ADD COLUMN cache_reason TEXT;"

# Version 2: tags, metadata and trace id on usage rows; usage_tags; the rollup's last request time (a key's
# last use); budget periods beyond daily/monthly (the CHECK on api_keys.budget_period goes: the application
# validates the period).
_TAGS_TABLE = """
CREATE TABLE usage_tags (
    tenant     TEXT NOT NULL,
    request_id TEXT NOT NULL,
    tag        TEXT NOT NULL,
    ts         {float} NOT NULL,
    PRIMARY KEY (tenant, request_id, tag)
);
CREATE INDEX usage_tags_tag_ts_idx ON usage_tags (tag, ts);
CREATE INDEX usage_tags_ts_idx ON usage_tags (ts);
"""
_V2_COLUMNS = """
ALTER TABLE usage_log ADD COLUMN tags TEXT;
ALTER TABLE usage_log ADD COLUMN metadata TEXT;
ALTER TABLE usage_log ADD COLUMN trace_id TEXT;
ALTER TABLE usage_daily ADD COLUMN last_ts {float};
CREATE INDEX usage_log_end_user_ts_idx ON usage_log (end_user, ts);
"""
_V2_POSTGRES = (
    _V2_COLUMNS.format(float="DOUBLE PRECISION") + _TAGS_TABLE.format(float="DOUBLE PRECISION") + """
UPDATE usage_daily d SET last_ts = (
    SELECT MAX(l.ts) FROM usage_log l WHERE l.tenant = d.tenant AND COALESCE(l.key_id, '') = d.key_id
    AND l.model = d.model AND (to_timestamp(l.ts) AT TIME ZONE 'UTC')::date = d.day);
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_budget_period_check;
"""
)
# SQLite cannot drop a CHECK constraint: api_keys is rebuilt without it.
_V2_SQLITE = (
    _V2_COLUMNS.format(float="REAL") + _TAGS_TABLE.format(float="REAL") + """
UPDATE usage_daily SET last_ts = (
    SELECT MAX(l.ts) FROM usage_log l WHERE l.tenant = usage_daily.tenant
    AND COALESCE(l.key_id, '') = usage_daily.key_id AND l.model = usage_daily.model
    AND strftime('%Y-%m-%d', l.ts, 'unixepoch') = usage_daily.day);
"""
    + "CREATE TABLE api_keys_v2 ("
    + _KEY_COLUMNS.format(float="REAL", json="TEXT", day="TEXT").replace(
        "budget_period  TEXT CHECK (budget_period IN ('daily', 'monthly'))", "budget_period  TEXT")
    + """);
INSERT INTO api_keys_v2 SELECT * FROM api_keys;
DROP TABLE api_keys;
ALTER TABLE api_keys_v2 RENAME TO api_keys;
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant);
"""
)

POSTGRES: list[tuple[int, str]] = [
    (1, _initial("DOUBLE PRECISION", "DATE", "JSONB")),
    (2, _V2_POSTGRES),
    (3, _CACHE_REASON),
]

SQLITE: list[tuple[int, str]] = [
    (1, _initial("REAL", "TEXT", "TEXT")),
    (2, _V2_SQLITE),
    (3, _CACHE_REASON),
]

MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at {float} NOT NULL)"
)
