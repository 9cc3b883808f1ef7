"""Virtual-key management shared by the admin API and ``deja keys``: create, list, update, revoke.

The secret is returned once, at creation; only its sha256 is stored. Every field fits the database's column
type (``INTEGER`` limits, finite floats) and no text holds a NUL (PostgreSQL cannot store one): a value that
would not is a 400 here, never a failed insert.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from router.auth.keys import generate_secret
from router.config import BudgetPeriod
from router.http import errors as err
from router.storage import KeyRecord, Storage

INT_MAX = 2**31 - 1  # rpm and tpm are INTEGER columns
MAX_SECONDS = 1e11  # unix seconds in the year 5138: any later expiry is a mistake
MAX_USD = 1e12


def _refuse_nul(data: Any) -> Any:
    """Refuse a NUL in any string of the input, keys included (walked iteratively, linear)."""
    stack = [data]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                raise ValueError("text may not contain a NUL character (\\u0000)")
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return data


class _KeyFields(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return _refuse_nul(data)


class KeySpec(_KeyFields):
    name: str = Field("", max_length=200)
    tenant: str = Field("default", min_length=1, max_length=200)
    allowed_models: list[str] = Field(default_factory=list)
    rpm: int | None = Field(None, ge=1, le=INT_MAX)
    tpm: int | None = Field(None, ge=1, le=INT_MAX)
    budget_usd: float | None = Field(None, ge=0, le=MAX_USD)
    budget_period: BudgetPeriod | None = None
    expires_at: float | None = Field(None, ge=0, le=MAX_SECONDS)  # unix seconds
    expires_in: float | None = Field(None, gt=0, le=MAX_SECONDS)  # seconds from now (instead of expires_at)
    metadata: dict[str, Any] = Field(default_factory=dict)


class KeyUpdate(_KeyFields):
    name: str | None = Field(None, max_length=200)
    tenant: str | None = Field(None, min_length=1, max_length=200)
    allowed_models: list[str] | None = None
    rpm: int | None = Field(None, ge=1, le=INT_MAX)
    tpm: int | None = Field(None, ge=1, le=INT_MAX)
    budget_usd: float | None = Field(None, ge=0, le=MAX_USD)
    budget_period: BudgetPeriod | None = None
    expires_at: float | None = Field(None, ge=0, le=MAX_SECONDS)
    metadata: dict[str, Any] | None = None


def parse(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(p) for p in first["loc"]) or None
        where = f"Invalid key field {param}" if param else "Invalid key"
        raise err.BadRequestError(f"{where}: {first['msg']}", param=param) from exc


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
