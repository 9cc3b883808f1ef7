"""``deja usage`` groups and filters by tag and end user; ``deja keys list`` shows each key's activity.
Both run the real command (``main``) on a real SQLite database and a real PostgreSQL schema."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from router.cli.main import main
from router.storage import KeyRecord, open_storage
from tests.integration.router.storage.helpers import BASE, make_records


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str, str | None]:
    if request.param == "sqlite":
        url, schema = f"sqlite:///{tmp_path / 'deja.db'}", None
    else:
        url, schema = request.getfixturevalue("database_url"), f"dejatest_{uuid.uuid4().hex[:12]}"
    path = tmp_path / "deja.yaml"
    path.write_text(json.dumps({"deja": {"database_url": url, "database_schema": schema}}))
    yield path, url, schema
    if schema is not None:
        async def drop() -> None:
            import asyncpg

            conn = await asyncpg.connect(url)
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            await conn.close()

        asyncio.run(drop())


async def _seed(url: str, schema: str | None) -> list:
    records = make_records(30)
    for i, r in enumerate(records):
        r.tags = json.dumps(["prod"] if i % 3 else ["prod", "batch"])
        r.key_id = "key_cli" if i < 10 else r.key_id
    storage = open_storage(url, schema=schema)
    await storage.connect()
    await storage.migrate()
    await storage.write_usage(records)
    await storage.insert_key(KeyRecord(id="key_cli", name="cli", tenant="acme", secret_hash="c" * 64,
                                       prefix="sk-deja-cli", created_at=BASE))
    await storage.close()
    return records


def test_usage_by_tag_and_user_and_keys_with_activity(config: tuple[Path, str, str | None],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path, url, schema = config
    records = asyncio.run(_seed(url, schema))
    assert main(["usage", "--config", str(path), "--group-by", "tag", "--json"]) == 0
    by_tag = {row["group"]: row["requests"] for row in json.loads(capsys.readouterr().out)}
    assert by_tag == {"prod": 30, "batch": 10}
    assert main(["usage", "--config", str(path), "--tag", "batch", "--user", "user-1", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["requests"] == sum(1 for i, r in enumerate(records) if i % 3 == 0 and r.end_user == "user-1")
    assert main(["usage", "--config", str(path), "--group-by", "user"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].startswith("user") and "user-2" in table and "TOTAL" in table
    assert main(["keys", "list", "--config", str(path)]) == 0
    line = capsys.readouterr().out.strip()
    spend = sum(r.cost_usd for r in records[:10])
    assert f"spend=${spend:.4f} requests=10 last_used=" in line and "last_used=never" not in line
