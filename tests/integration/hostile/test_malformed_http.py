"""Each failure a hostile or careless client found (issue 14), as a test: a 4xx in OpenAI's shape, never a
500, nothing sent upstream for a refused request, and an answered request keeps its usage row."""

from __future__ import annotations

import json
import logging

import pytest

from providers.fake_openai import FakeOpenAI
from tests.integration.harness import Deja
from tests.integration.hostile.conftest import MASTER, usage_rows
from tests.integration.hostile.helpers import raw_request

CHAT = "/v1/chat/completions"
JSON = (b"Content-Type", b"application/json")
AUTH = (b"Authorization", b"Bearer " + MASTER.encode())
NO_STORE = (b"Cache-Control", b"no-store")
HI = [{"role": "user", "content": "hi"}]


def chat_body(**fields: object) -> bytes:
    return json.dumps({"model": "gpt-4o-mini", "messages": HI, **fields}).encode()


def raw_chat(messages: str = '[{"role": "user", "content": "hi"}]', extra: str = "") -> bytes:
    return b'{"model": "gpt-4o-mini", "messages": ' + messages.encode() + extra.encode() + b"}"


BAD_CHATS = {
    "nested 1000 levels": raw_chat(extra=', "x": ' + "[" * 1000 + "]" * 1000),
    "nested 100 levels": raw_chat(extra=', "x": ' + "[" * 100 + "]" * 100),
    "body nested 5000 levels": b"[" * 5000 + b"]" * 5000,
    "lone surrogate in content": raw_chat('[{"role": "user", "content": "hi \\ud800"}]'),
    "lone surrogate in name": raw_chat('[{"role": "user", "content": "hi", "name": "\\udc00"}]'),
    "lone surrogate in user": raw_chat(extra=', "user": "\\ud83d"'),
    "lone surrogate in a key": raw_chat(extra=', "\\ud800": 1'),
    "tool_calls 5": json.dumps({"model": "gpt-4o-mini", "messages": [
        *HI, {"role": "assistant", "tool_calls": 5}]}).encode(),
    "stream as a string": chat_body(stream="false"),
    "developer without content": json.dumps({"model": "gpt-4o-mini", "messages": [
        {"role": "developer"}, *HI]}).encode(),
    "user without content": json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user"}]}).encode(),
    "NaN": raw_chat(extra=', "temperature": NaN'),
}


async def test_malformed_chat_bodies_are_400s(deja: Deja, upstream: FakeOpenAI) -> None:
    # one app for every case: each app adds LiteLLM callbacks to a process-wide list capped at 100
    for case, body in BAD_CHATS.items():
        r = await raw_request(deja.port, "POST", CHAT, headers=[AUTH, JSON, NO_STORE], body=body)
        assert r.status == 400 and r.is_openai_error(), (case, r.status, r.body[:300])
    non_utf8 = b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi \xff\xfe"}]}'
    r = await raw_request(deja.port, "POST", CHAT, headers=[AUTH, JSON], body=non_utf8)
    assert r.status == 400 and r.is_openai_error()
    r = await raw_request(deja.port, "POST", CHAT, headers=[AUTH, JSON, (b"Content-Encoding", b"gzip")],
                          body=chat_body())
    assert r.status == 400 and r.is_openai_error() and "gzip" in r.json()["error"]["message"]
    assert upstream.received == []
    for header in (b"Authorization", b"api-key"):
        value = (b"Bearer " if header == b"Authorization" else b"") + b"sk-deja-\xff\xfe\xfd"
        r = await raw_request(deja.port, "POST", CHAT, headers=[(header, value), JSON], body=chat_body())
        assert r.status == 401 and r.is_openai_error() and r.json()["error"]["code"] == "invalid_api_key"


PARSER_REJECTS = {
    "bad method": b"GE\x01T /v1/models HTTP/1.1",
    "bad version": b"GET /v1/models HTTP/9.x",
    "bad target": b"GET \x7f HTTP/1.1",
}


async def test_what_aiohttps_parser_refuses_is_openai_shaped(deja: Deja) -> None:
    for case, line in PARSER_REJECTS.items():
        r = await raw_request(deja.port, "GET", "/", request_line=line)
        assert 400 <= r.status < 500 and r.is_openai_error(), (case, r.status, r.headers, r.body[:200])


async def test_a_padded_key_is_refused_and_never_logged(deja: Deja, caplog: pytest.LogCaptureFixture) -> None:
    secret = b"sk-deja-" + b"S3cr3t" * 1400  # past aiohttp's 8,190-byte header line
    with caplog.at_level(logging.DEBUG):
        r = await raw_request(deja.port, "POST", CHAT, headers=[(b"Authorization", b"Bearer " + secret), JSON],
                              body=chat_body())
        for header in ((b"Authorization", b"Bearer " + secret[:8000]), (b"api-key", secret[:8000] + b"\xff")):
            refused = await raw_request(deja.port, "POST", CHAT, headers=[header, JSON], body=chat_body())
            assert refused.status == 401 and refused.is_openai_error()
    assert r.status == 400 and r.is_openai_error()
    logged = caplog.text + "".join(str(record.args) + str(record.exc_info) for record in caplog.records)
    assert "S3cr3tS3cr3t" not in logged


BAD_KEYS = {
    "rpm past 64 bits": b'{"name": "x", "rpm": 99999999999999999999999}',
    "rpm past INTEGER": b'{"name": "x", "rpm": 2147483648}',
    "tpm past INTEGER": b'{"name": "x", "tpm": 2147483648}',
    "NUL in tenant": b'{"name": "x", "tenant": "a\\u0000b"}',
    "NUL in metadata": b'{"name": "x", "metadata": {"k\\u0000": "v"}}',
    "NaN expiry": b'{"name": "x", "expires_at": NaN}',
    "Infinity budget": b'{"name": "x", "budget_usd": Infinity}',
    "expiry as the string nan": b'{"name": "x", "expires_at": "nan"}',
    "expiry past year 5000": b'{"name": "x", "expires_at": 1e300}',
    "lone surrogate in name": b'{"name": "\\ud800"}',
    "nested metadata": b'{"name": "x", "metadata": ' + b'{"a": ' * 100 + b"1" + b"}" * 100 + b"}",
    "not an object": b"[1, 2]",
}


async def test_admin_key_fields_must_fit_the_database(deja: Deja) -> None:
    for case, body in BAD_KEYS.items():
        r = await raw_request(deja.port, "POST", "/admin/keys", headers=[AUTH, JSON], body=body)
        assert r.status == 400 and r.is_openai_error(), (case, r.status, r.body[:300])
    for query in ("/admin/keys?tenant=a%00b", "/admin/usage?tenant=a%00b", "/admin/keys/key%00"):
        r = await raw_request(deja.port, "GET", query, headers=[AUTH])
        assert r.status == 400 and r.is_openai_error(), (query, r.status, r.body[:300])
    listing = await raw_request(deja.port, "GET", "/admin/keys", headers=[AUTH])
    assert listing.json()["data"] == []


async def test_admin_limits_at_the_database_bounds_are_stored(deja: Deja) -> None:
    body = b'{"name": "x", "rpm": 2147483647, "tpm": 2147483647, "budget_usd": 1e12, "expires_at": 1e11}'
    r = await raw_request(deja.port, "POST", "/admin/keys", headers=[AUTH, JSON], body=body)
    assert r.status == 201, r.body
    key_id = r.json()["id"]
    patched = await raw_request(deja.port, "PATCH", f"/admin/keys/{key_id}", headers=[AUTH, JSON],
                                body=b'{"rpm": 2147483648}')
    assert patched.status == 400 and patched.is_openai_error()
    got = await raw_request(deja.port, "GET", f"/admin/keys/{key_id}", headers=[AUTH])
    assert got.json()["rpm"] == 2**31 - 1


async def test_nul_in_user_keeps_the_row(deja: Deja, upstream: FakeOpenAI) -> None:
    """PostgreSQL refused the row ("invalid byte sequence for encoding UTF8: 0x00") after a 200."""
    r = await raw_request(deja.port, "POST", CHAT, headers=[AUTH, JSON, NO_STORE],
                          body=chat_body(user="x\u0000y", messages=[{"role": "user", "content": "nul \u0000 here"}]))
    assert r.status == 200 and len(upstream.received) == 1
    (row,) = await usage_rows(deja, 1)
    assert row["end_user"] == "x\\u0000y" and row["status"] == 200


FUZZ_FINDINGS = {  # found by test_fuzz over /v1/completions and /v1/embeddings: each was a 500 or a 502
    "completions: an empty prompt list": ("/v1/completions", {"model": "gpt-4o-mini", "prompt": []}, 400),
    "completions: token ids for a chat model": ("/v1/completions", {"model": "gpt-4o-mini", "prompt": [0]}, 400),
    "completions: best_of as a string": ("/v1/completions", {"model": "gpt-4o-mini", "prompt": "",
                                                             "best_of": "x\u0000y"}, 400),
    "embeddings: a stream flag": ("/v1/embeddings", {"model": "gpt-4o-mini", "input": "a", "stream": "yes"}, 200),
    "embeddings: chat's tools": ("/v1/embeddings", {"model": "gpt-4o-mini", "input": "a", "tools": "x"}, 200),
}


@pytest.mark.parametrize("case", sorted(FUZZ_FINDINGS))
async def test_what_the_fuzz_found_is_a_client_error_or_an_answer(case: str, deja: Deja) -> None:
    path, body, status = FUZZ_FINDINGS[case]
    r = await raw_request(deja.port, "POST", path, headers=[AUTH, JSON, NO_STORE], body=json.dumps(body).encode())
    assert r.status == status, (case, r.status, r.body[:300])
    if status >= 400:
        assert r.is_openai_error()
