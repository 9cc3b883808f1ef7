"""Fuzz: requests drawn from OpenAI's published schema, and hostile mutations of them, against the real app.

deja (real app, real TCP, PostgreSQL usage storage in a schema of its own, exact cache on) in front of the fake
OpenAI upstream runs in a thread of its own; hypothesis sends chat completions, embeddings, legacy completions and
Responses requests (from ``CreateChatCompletionRequest``, ``CreateEmbeddingRequest``, ``CreateCompletionRequest``,
``CreateResponse``, then mutated), model listings, admin calls with
hostile fields and query strings, and raw hostile HTTP. For every answer: no 5xx, and a 4xx is OpenAI's error
shape. At the end: every answered (2xx) chat or embeddings request has exactly one usage row, no other row
exists, no row was refused by the database, and deja is still healthy.
"""

from __future__ import annotations

import asyncio
import os
import threading
import urllib.parse
import uuid
from collections import Counter
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from providers.fake_openai import FakeOpenAI
from router.appkeys import STORAGE, USAGE
from router.storage import UsageFilter
from tests.integration.harness import Deja, drop_storage, make_settings, start_deja
from tests.integration.hostile import openai_schema as oas
from tests.integration.hostile.conftest import MASTER
from tests.integration.hostile.helpers import RawResponse, raw_request

T = TypeVar("T")
MODEL = "gpt-4o-mini"
EXAMPLES = int(os.environ.get("DEJA_FUZZ_EXAMPLES", "300"))
# the suite draws the same cases every run (CI stays reproducible); DEJA_FUZZ_RANDOM=1 explores new ones
RANDOM = bool(os.environ.get("DEJA_FUZZ_RANDOM"))
JSON = (b"Content-Type", b"application/json")
AUTH = (b"Authorization", b"Bearer " + MASTER.encode())


class Server:
    """deja and the fake upstream on an event loop in a background thread; ``run`` a coroutine there."""

    def __init__(self, tmp_path: Path, database_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-server", daemon=True)
        self.thread.start()
        self.extra = {"database_url": database_url, "database_schema": f"dejatest_{uuid.uuid4().hex[:12]}"}
        self.upstream: FakeOpenAI = self.run(FakeOpenAI().start())
        self.deja: Deja = self.run(start_deja(make_settings(tmp_path, self.upstream, master_key=MASTER,
                                                            cache={"semantic": False}, **self.extra)))

    def run(self, coro: Awaitable[T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def request(self, method: str, path: str, *, headers: list[tuple[bytes, bytes]] | None = None,
                body: bytes = b"", request_line: bytes | None = None) -> RawResponse:
        return self.run(raw_request(self.deja.port, method, path, headers=headers, body=body,
                                    request_line=request_line))

    def close(self) -> None:
        self.run(self.deja.close())
        self.run(self.upstream.close())
        self.run(drop_storage(self.extra))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    s = Server(tmp_path, database_url)
    yield s
    s.close()


# -- the cases --------------------------------------------------------------------------------------------

HEADER_VALUES = [b"Bearer " + MASTER.encode(), b"Bearer \xff\xfe", b"Bearer sk-deja-" + b"A" * 100, b"",
                 b"Basic Zm9vOmJhcg==", b"Bearer " + MASTER.encode() + b"\x80"]


def _chat() -> st.SearchStrategy[dict[str, Any]]:
    return oas.request("CreateChatCompletionRequest", MODEL)


def _embedding() -> st.SearchStrategy[dict[str, Any]]:
    return oas.request("CreateEmbeddingRequest", MODEL)


def _completion() -> st.SearchStrategy[dict[str, Any]]:
    return oas.request("CreateCompletionRequest", MODEL)


def _response() -> st.SearchStrategy[dict[str, Any]]:
    return oas.request("CreateResponse", MODEL)


API_ROUTES = ("/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/responses")


@st.composite
def api_case(draw: st.DrawFn) -> tuple[str, str, list[tuple[bytes, bytes]], bytes]:
    """(method, path, headers, body) of an OpenAI route: a schema body, often mutated, with a drawn key."""
    path = draw(st.sampled_from(API_ROUTES))
    body = draw({"/v1/chat/completions": _chat, "/v1/embeddings": _embedding, "/v1/completions": _completion,
                 "/v1/responses": _response}[path]())
    if draw(st.booleans()):
        body = draw(oas.mutate(body))
    key = HEADER_VALUES[0] if draw(st.integers(0, 9)) < 7 else draw(st.sampled_from(HEADER_VALUES))
    headers = [JSON, (draw(st.sampled_from([b"Authorization", b"api-key"])), key)]
    if draw(st.integers(0, 9)) == 0:
        headers.append((b"Content-Encoding", b"gzip"))
    if draw(st.booleans()):
        headers.append((b"Cache-Control", b"no-store"))
    if draw(st.integers(0, 4)) == 0:
        headers.append((b"X-Request-Id", draw(st.sampled_from([b"fuzz-1", b"fuzz-1", b"bad id", b"\xff"]))))
    if draw(st.booleans()) and headers[1][1] == HEADER_VALUES[1]:
        headers[1] = (b"api-key", b"\xff" * 3)
    return "POST", path, headers, oas.encode(body)


ADMIN_FIELDS = {"name": oas.TEXT, "tenant": oas.TEXT, "rpm": st.integers(-10, 2**70), "tpm": st.integers(-10, 2**70),
                "budget_usd": st.floats(allow_nan=True, allow_infinity=True), "budget_period": oas.TEXT,
                "expires_at": st.floats(allow_nan=True, allow_infinity=True), "expires_in": st.floats(),
                "allowed_models": st.lists(oas.TEXT, max_size=2), "metadata": st.dictionaries(oas.TEXT, oas.TEXT,
                                                                                              max_size=2)}
QUERY_VALUES = st.sampled_from(["x\x00y", "\ud800", "nan", "1e400", "-1", "99999999999999999999", "%", "",
                                "0", "2026-01-01", "day", "model", "tenant", "key", "acme"])


@st.composite
def admin_case(draw: st.DrawFn) -> tuple[str, str, list[tuple[bytes, bytes]], bytes]:
    kind = draw(st.sampled_from(["create", "list", "usage", "requests", "get"]))
    if kind == "create":
        body = draw(st.fixed_dictionaries({}, optional=ADMIN_FIELDS))
        if draw(st.booleans()):
            body = draw(oas.mutate(body))
        return "POST", "/admin/keys", [AUTH, JSON], oas.encode(body)
    params = {"list": ["tenant"], "usage": ["since", "until", "group_by", "tenant", "key", "model"],
              "requests": ["limit", "cursor", "since", "bodies"], "get": []}[kind]
    chosen = draw(st.dictionaries(st.sampled_from(params), QUERY_VALUES, min_size=1, max_size=3)) if params else {}
    query = urllib.parse.urlencode(chosen, errors="surrogatepass") if chosen else ""
    path = {"list": "/admin/keys", "usage": "/admin/usage", "requests": "/admin/requests",
            "get": "/admin/keys/" + urllib.parse.quote(draw(st.one_of(QUERY_VALUES, oas.TEXT)) or "x", safe="",
                                                       errors="surrogatepass")}[kind]
    return "GET", path + ("?" + query if query else ""), [AUTH], b""


@st.composite
def other_case(draw: st.DrawFn) -> tuple[str, str, list[tuple[bytes, bytes]], bytes]:
    kind = draw(st.sampled_from(["models", "model", "raw body", "bad line"]))
    if kind == "models":
        return "GET", "/v1/models", [AUTH], b""
    if kind == "model":
        return "GET", "/v1/models/" + urllib.parse.quote(draw(oas.TEXT) or "x", safe=""), [AUTH], b""
    if kind == "raw body":
        path = draw(st.sampled_from([*API_ROUTES, "/admin/keys"]))
        return "POST", path, [AUTH, JSON], draw(st.binary(max_size=64))
    return "LINE", draw(st.sampled_from(["GE\x01T / HTTP/1.1", "GET / HTTP/9.x", "GET \x7f HTTP/1.1",
                                         "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: -1"])), [], b""


@st.composite
def any_case(draw: st.DrawFn) -> tuple[str, str, list[tuple[bytes, bytes]], bytes]:
    """Half OpenAI routes, a quarter admin, a quarter the rest (``one_of`` alone leans to its first branch)."""
    kind = draw(st.sampled_from(["api", "api", "admin", "other"]))
    return draw({"api": api_case(), "admin": admin_case(), "other": other_case()}[kind])


CASES = any_case()


def _check(response: RawResponse, case: tuple[str, str, list[tuple[bytes, bytes]], bytes]) -> None:
    assert response.status < 500, (response.status, case, response.body[:400])
    if response.status >= 400:
        assert response.is_openai_error(), (response.status, case, response.headers, response.body[:400])


def test_fuzz_no_5xx_openai_errors_and_one_row_per_answer(server: Server) -> None:
    answered: list[str] = []
    seen: list[str] = []
    statuses: Counter[int] = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not RANDOM,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture])
    @given(case=CASES)
    def one(case: tuple[str, str, list[tuple[bytes, bytes]], bytes]) -> None:
        method, path, headers, body = case
        if method == "LINE":
            response = server.request("GET", "/", request_line=path.encode("latin-1"))
        else:
            response = server.request(method, path, headers=headers, body=body)
        _check(response, case)
        statuses[response.status] += 1
        request_id = response.headers.get("x-deja-request-id")
        if request_id and path.startswith(API_ROUTES):
            seen.append(request_id)
            if 200 <= response.status < 300:
                answered.append(request_id)

    one()
    print(f"fuzz: {len(seen)} OpenAI-route requests, {len(answered)} answered, statuses {dict(statuses)}")
    assert len(answered) >= EXAMPLES // 20  # the schema's bodies do reach the upstream, not only the 4xx paths
    rows = server.run(_rows(server.deja))
    counts = Counter(row["request_id"] for row in rows)
    assert all(counts[i] == 1 for i in answered), [i for i in answered if counts[i] != 1]
    assert set(counts) <= set(seen) and max(counts.values(), default=1) == 1
    assert server.deja.app[USAGE].rejected == 0 and server.deja.app[USAGE].dropped == 0
    live = server.request("GET", "/health/live")
    ready = server.request("GET", "/health/ready")
    assert (live.status, ready.status) == (200, 200)
    sane = server.request("POST", "/v1/chat/completions", headers=[AUTH, JSON],
                          body=b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "still fine?"}]}')
    assert sane.status == 200 and b"still fine?" in sane.body


async def _rows(deja: Deja) -> list[dict[str, Any]]:
    await deja.settled()
    writer = deja.app[USAGE]
    assert await writer.flush()
    found, _ = await deja.app[STORAGE].list_requests(UsageFilter(), limit=1000)
    return found
