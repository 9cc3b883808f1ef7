"""A client that closed its connection mid-stream is a cancellation for the handler, never a server error."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from router.http.sse import SSEWriter


class GoneClient:
    """aiohttp's payload writer for a transport the client already closed."""

    buffer_size = 0
    output_size = 0
    length = None

    def __init__(self, fail_headers: bool = False) -> None:
        self.fail_headers = fail_headers

    async def write_headers(self, status_line: str, headers: Any) -> None:
        if self.fail_headers:
            raise ConnectionResetError("Cannot write to closing transport")

    def send_headers(self) -> None:
        if self.fail_headers:
            raise ConnectionResetError("Cannot write to closing transport")

    async def write(self, data: bytes, *args: Any, **kwargs: Any) -> None:
        raise ConnectionResetError("Cannot write to closing transport")

    async def write_eof(self, data: bytes = b"") -> None:
        raise ConnectionResetError("Cannot write to closing transport")

    async def drain(self) -> None:
        return None

    def enable_chunking(self) -> None:
        return None

    def enable_compression(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.mark.parametrize("step", ["send", "keepalive", "done"])
async def test_a_write_to_a_gone_client_cancels(step: str) -> None:
    writer = SSEWriter(make_mocked_request("POST", "/v1/chat/completions", writer=GoneClient()), {})
    action = {"send": lambda: writer.send({"choices": []}), "keepalive": writer.keepalive, "done": writer.done}
    with pytest.raises(asyncio.CancelledError):
        await action[step]()


async def test_a_client_gone_before_the_headers_cancels() -> None:
    writer = SSEWriter(make_mocked_request("POST", "/v1/chat/completions", writer=GoneClient(fail_headers=True)),
                       {})
    with pytest.raises(asyncio.CancelledError):
        await writer.send({"choices": []})
