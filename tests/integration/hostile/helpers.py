"""Raw HTTP for hostile-client tests: bytes on a socket, so headers and bodies can be what no client library
would send (non-UTF-8 header bytes, a header past aiohttp's 8,190-byte line limit, a lying Content-Encoding)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

ERROR_FIELDS = {"message", "type", "param", "code"}


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    def is_openai_error(self) -> bool:
        """An OpenAI-shaped error: JSON ``{"error": {"message", "type", "param", "code"}}``."""
        if not self.headers.get("content-type", "").startswith("application/json"):
            return False
        try:
            data = self.json()
        except orjson.JSONDecodeError:
            return False
        return isinstance(data, dict) and isinstance(data.get("error"), dict) and set(data["error"]) == ERROR_FIELDS


async def raw_request(port: int, method: str, path: str, *, headers: list[tuple[bytes, bytes]] | None = None,
                      body: bytes = b"", request_line: bytes | None = None, timeout: float = 30.0) -> RawResponse:
    """Send one HTTP/1.1 request as bytes (``Connection: close``) and read the whole response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        lines = [request_line or f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", b"Connection: close"]
        lines += [name + b": " + value for name, value in headers or []]
        if body and not any(name.lower() == b"content-length" for name, _ in headers or []):
            lines.append(b"Content-Length: " + str(len(body)).encode())
        writer.write(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    return parse_response(raw)


def parse_response(raw: bytes) -> RawResponse:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return RawResponse(int(status_line.split()[1]), headers, body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0] or b"0", 16)
        if size == 0:
            break
        out += rest[:size]
        data = rest[size + 2:]
    return bytes(out)
