"""Virtual-key management shared by the admin API and ``deja keys``: create, list, update, revoke.

The secret is returned once, at creation; only its sha256 is stored.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router.auth.keys import generate_secret
from router.config import BudgetPeriod
from router.http import errors as err
from router.storage import KeyRecord, Storage


class KeySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field("", max_length=200)
    tenant: str = Field("default", min_length=1, max_length=200)
    allowed_models: list[str] = Field(default_factory=list)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    budget_usd: float | None = Field(None, ge=0)
    budget_period: BudgetPeriod | None = None
    expires_at: float | None = None  # unix seconds
    expires_in: float | None = Field(None, gt=0)  # seconds from now (alternative to expires_at)
    metadata: dict[str, Any] = Field(default_factory=dict)


class KeyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, max_length=200)
    tenant: str | None = Field(None, min_length=1, max_length=200)
    allowed_models: list[str] | None = None
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    budget_usd: float | None = Field(None, ge=0)
    budget_period: BudgetPeriod | None = None
    expires_at: float | None = None
    metadata: dict[str, Any] | None = None


def parse(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        raise err.BadRequestError(f"Invalid key field {param}: {first['msg']}", param=param) from exc


def key_view(record: KeyRecord) -> dict[str, Any]:
    """What the API shows of a key: everything but the hash."""
    return {"id": record.id, "object": "key", "name": record.name, "tenant": record.tenant,
            "key_prefix": record.prefix, "allowed_models": record.allowed_models, "rpm": record.rpm,
            "tpm": record.tpm, "budget_usd": record.budget_usd, "budget_period": record.budget_period,
            "expires_at": record.expires_at, "metadata": record.metadata, "created_at": record.created_at,
            "revoked_at": record.revoked_at, "active": record.revoked_at is None and
            (record.expires_at is None or record.expires_at > time.time())}


async def create_key(storage: Storage, spec: KeySpec) -> tuple[KeyRecord, str]:
    secret, digest, prefix = generate_secret()
    expires = spec.expires_at
    if spec.expires_in is not None:
        expires = time.time() + spec.expires_in
    record = KeyRecord(id=f"key_{uuid.uuid4().hex[:16]}", name=spec.name, tenant=spec.tenant, secret_hash=digest,
                       prefix=prefix, allowed_models=list(spec.allowed_models), rpm=spec.rpm, tpm=spec.tpm,
                       budget_usd=spec.budget_usd, budget_period=spec.budget_period, expires_at=expires,
                       metadata=dict(spec.metadata), created_at=time.time(), revoked_at=None)
    await storage.insert_key(record)
    return record, secret


async def update_key(storage: Storage, key_id: str, update: KeyUpdate) -> KeyRecord:
    fields = update.model_dump(exclude_unset=True)
    record = await storage.update_key(key_id, **fields) if fields else await storage.get_key(key_id)
    if record is None:
        raise err.NotFoundError(f"No key {key_id}.", param="id", code="key_not_found")
    return record


async def revoke_key(storage: Storage, key_id: str) -> KeyRecord:
    if not await storage.revoke_key(key_id, time.time()):
        existing = await storage.get_key(key_id)
        if existing is None:
            raise err.NotFoundError(f"No key {key_id}.", param="id", code="key_not_found")
        return existing
    record = await storage.get_key(key_id)
    assert record is not None
    return record
