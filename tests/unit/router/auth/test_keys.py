"""Virtual-key authentication: headers, master key, revocation within the cache TTL, expiry, model access."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import replace
from typing import Any

import pytest
from multidict import CIMultiDict

import router.auth.keys as auth
from router.auth.keys import (
    ANONYMOUS,
    SECRET_PREFIX,
    Authenticator,
    Limits,
    generate_secret,
    hash_secret,
)
from router.http.errors import AuthenticationError, PermissionDeniedError, ServiceUnavailableError
from router.storage.models import KeyRecord as Record

MASTER_KEY = "master-key-for-tests"
T0 = 1_700_000_000.0




class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Store:
    def __init__(self) -> None:
        self.records: dict[str, Record] = {}
        self.lookups = 0
        self.fail = False

    def create(self, **fields: Any) -> tuple[str, Record]:
        secret, digest, prefix = generate_secret()
        record = Record(id=f"key-{len(self.records)}", secret_hash=digest, prefix=prefix,
                        **{"created_at": T0, **fields})
        self.records[digest] = record
        return secret, record

    async def lookup(self, secret_hash: str) -> Record | None:
        self.lookups += 1
        if self.fail:
            raise ConnectionError("database down")
        return self.records.get(secret_hash)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> Store:
    return Store()


@pytest.fixture
def authn(store: Store, clock: Clock) -> Authenticator:
    return Authenticator(master_key=MASTER_KEY, lookup=store.lookup, cache_ttl=1.0, clock=clock)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def test_generate_secret_stores_only_a_sha256_hash() -> None:
    secret, digest, display = generate_secret()
    other, _, _ = generate_secret()
    assert secret.startswith(SECRET_PREFIX) and len(secret) >= len(SECRET_PREFIX) + 40
    assert secret != other
    assert digest == hash_secret(secret) == hashlib.sha256(secret.encode()).hexdigest()
    assert display == secret[: len(SECRET_PREFIX) + 4] + "…"


async def test_open_mode_is_anonymous_in_tenant_default(store: Store) -> None:
    authn = Authenticator(master_key=None, lookup=store.lookup)
    assert authn.open
    principal = await authn.authenticate({})
    assert principal is ANONYMOUS and principal.tenant == "default" and principal.limits == Limits()
    assert (await authn.authenticate(bearer("sk-deja-whatever"))) is ANONYMOUS
    assert store.lookups == 0
    with pytest.raises(PermissionDeniedError):  # no master key: nobody may manage keys
        await authn.require_master({})


async def test_bearer_key_yields_its_principal(authn: Authenticator, store: Store) -> None:
    secret, record = store.create(
        name="ci",
        tenant="acme",
        allowed_models=["gpt-4o-mini"],
        rpm=5,
        tpm=1000,
        budget_usd=2.5,
        budget_period="daily",
        metadata={"team": "search"},
    )
    principal = await authn.authenticate(bearer(secret))
    assert (principal.key_id, principal.tenant, principal.name, principal.is_master) == (
        record.id,
        "acme",
        "ci",
        False,
    )
    assert principal.limits == Limits(rpm=5, tpm=1000, budget_usd=2.5, budget_period="daily")
    assert principal.allowed_models == ("gpt-4o-mini",) and principal.metadata == {"team": "search"}
    assert not authn.open


@pytest.mark.parametrize(
    "headers",
    [
        lambda s: {"api-key": s},
        lambda s: {"Api-Key": s},
        lambda s: {"authorization": f"bearer {s}"},
        lambda s: CIMultiDict({"AUTHORIZATION": f"Bearer  {s} "}),
    ],
)
async def test_key_is_read_from_bearer_or_azure_api_key_header(
    authn: Authenticator, store: Store, headers
) -> None:
    secret, record = store.create(name="n", tenant="t")
    assert (await authn.authenticate(headers(secret))).key_id == record.id


async def test_master_key_is_master_in_tenant_default(authn: Authenticator) -> None:
    principal = await authn.authenticate(bearer(MASTER_KEY))
    assert principal.is_master and principal.tenant == "default" and principal.limits == Limits()
    assert principal.may_use("any-model")
    assert (await authn.require_master({"api-key": MASTER_KEY})).is_master


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        bearer("sk-deja-not-a-real-key"),
        bearer("not-even-a-deja-key"),
        bearer(MASTER_KEY[:-1]),
        bearer(MASTER_KEY + "x"),
    ],
)
async def test_missing_or_bad_key_is_401_in_openai_shape(
    authn: Authenticator, headers: dict[str, str]
) -> None:
    with pytest.raises(AuthenticationError) as info:
        await authn.authenticate(headers)
    assert info.value.status == 401
    body = info.value.body()["error"]
    assert body["type"] == "invalid_request_error" and body["code"] in ("invalid_api_key", "missing_api_key")
    with pytest.raises(AuthenticationError):
        await authn.require_master(headers)


async def test_foreign_keys_are_rejected_without_a_lookup(authn: Authenticator, store: Store) -> None:
    with pytest.raises(AuthenticationError):
        await authn.authenticate(bearer("sk-proj-" + "x" * 40))
    assert store.lookups == 0


async def test_virtual_key_cannot_use_the_admin_api(authn: Authenticator, store: Store) -> None:
    secret, _ = store.create(name="n", tenant="t")
    with pytest.raises(PermissionDeniedError) as info:
        await authn.require_master(bearer(secret))
    assert info.value.status == 403


async def test_revocation_is_effective_within_cache_ttl(
    authn: Authenticator, store: Store, clock: Clock
) -> None:
    secret, record = store.create(name="n", tenant="t")
    assert (await authn.authenticate(bearer(secret))).key_id == record.id
    store.records[record.secret_hash] = replace(record, revoked_at=clock.now)  # revoked via another replica
    clock.now += 0.5
    assert (await authn.authenticate(bearer(secret))).key_id == record.id  # still cached on this replica
    assert store.lookups == 1
    clock.now += 0.5  # cache_ttl has passed
    with pytest.raises(AuthenticationError, match="revoked"):
        await authn.authenticate(bearer(secret))


async def test_invalidate_applies_a_local_revocation_at_once(authn: Authenticator, store: Store) -> None:
    secret, record = store.create(name="n", tenant="t")
    await authn.authenticate(bearer(secret))
    store.records[record.secret_hash] = replace(record, revoked_at=T0)
    authn.invalidate(record.secret_hash)
    with pytest.raises(AuthenticationError):
        await authn.authenticate(bearer(secret))


async def test_expired_key_is_401_even_while_cached(authn: Authenticator, store: Store, clock: Clock) -> None:
    secret, _ = store.create(name="n", tenant="t", expires_at=T0 + 0.5)
    await authn.authenticate(bearer(secret))
    clock.now = T0 + 0.5
    with pytest.raises(AuthenticationError, match="expired"):
        await authn.authenticate(bearer(secret))
    old, _ = store.create(name="old", tenant="t", expires_at=T0 - 1)
    with pytest.raises(AuthenticationError):
        await authn.authenticate(bearer(old))


async def test_unknown_keys_are_cached_briefly(authn: Authenticator, store: Store, clock: Clock) -> None:
    secret, digest, prefix = generate_secret()
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            await authn.authenticate(bearer(secret))
    assert store.lookups == 1
    store.records[digest] = Record(id="late", name="n", tenant="t", secret_hash=digest, prefix=prefix, created_at=T0)
    clock.now += 1.0
    assert (await authn.authenticate(bearer(secret))).key_id == "late"


async def test_lookup_failure_uses_the_stale_entry_or_is_503(
    authn: Authenticator, store: Store, clock: Clock
) -> None:
    known, record = store.create(name="n", tenant="t")
    await authn.authenticate(bearer(known))
    store.fail = True
    clock.now += 5
    assert (await authn.authenticate(bearer(known))).key_id == record.id
    unknown, _ = store.create(name="m", tenant="t")
    with pytest.raises(ServiceUnavailableError) as info:
        await authn.authenticate(bearer(unknown))
    assert info.value.status == 503


async def test_concurrent_requests_share_one_lookup(store: Store, clock: Clock) -> None:
    gate = asyncio.Event()

    async def slow_lookup(secret_hash: str) -> Record | None:
        await gate.wait()
        return await store.lookup(secret_hash)

    authn = Authenticator(master_key=MASTER_KEY, lookup=slow_lookup, clock=clock)
    secret, record = store.create(name="n", tenant="t")
    tasks = [asyncio.create_task(authn.authenticate(bearer(secret))) for _ in range(10)]
    await asyncio.sleep(0)
    gate.set()
    principals = await asyncio.gather(*tasks)
    assert {p.key_id for p in principals} == {record.id} and store.lookups == 1


async def test_model_not_allowed_is_403(authn: Authenticator, store: Store) -> None:
    secret, _ = store.create(name="n", tenant="t", allowed_models=["gpt-4o-mini", "claude-*"])
    principal = await authn.authenticate(bearer(secret))
    authn.check_model(principal, "gpt-4o-mini")
    authn.check_model(principal, "claude-3-5-haiku")
    with pytest.raises(PermissionDeniedError) as info:
        authn.check_model(principal, "gpt-4o")
    assert (info.value.status, info.value.param, info.value.code) == (403, "model", "model_not_allowed")
    everything, _ = store.create(name="all", tenant="t")
    authn.check_model(await authn.authenticate(bearer(everything)), "gpt-4o")
    authn.check_model(ANONYMOUS, "gpt-4o")


async def test_secrets_are_compared_in_constant_time(
    authn: Authenticator, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    with pytest.raises(AuthenticationError):
        await authn.authenticate(bearer("master-key-for-test"))
    assert (b"master-key-for-test", MASTER_KEY.encode()) in compared
    assert (await authn.authenticate(bearer(MASTER_KEY))).is_master
    secret, record = store.create(name="n", tenant="t")
    compared.clear()
    await authn.authenticate(bearer(secret))
    assert (record.secret_hash.encode(), hash_secret(secret).encode()) in compared
