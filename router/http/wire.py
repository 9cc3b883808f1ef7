"""What aiohttp's own HTTP parser refuses, answered in OpenAI's error shape (and logged without the bytes).

A request line or header that is not HTTP (a bad method, version or URL, a header past 8,190 bytes, a
duplicate ``Content-Type``) never reaches the app or its middleware: aiohttp's ``RequestHandler.handle_error``
answers it, as ``text/plain`` quoting the offending bytes, and logs the same bytes with a traceback, so a
padded ``Authorization`` header lands in the log. ``DejaRunner`` serves the app through a request handler
whose ``handle_error`` answers ``{"error": {"message", "type", "param", "code"}}`` and logs only the kind of
failure. Use it wherever the app is served (``router.app.serve``, the test harness, benchmarks).
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from router.http import errors as err
from router.http.middleware import error_response

log = logging.getLogger("deja.http")


def _error_for(status: int, exc: BaseException | None) -> err.DejaError:
    kind = type(exc).__name__ if exc is not None else "HTTP error"
    if status >= 500:
        return err.DejaError("Internal error in deja while reading the request.", code="internal_error")
    if kind == "LineTooLong":
        message = "A request line or header is longer than the server accepts (8,190 bytes)."
    else:
        message = f"Malformed HTTP request ({kind}): the request line or headers could not be parsed."
    error = err.BadRequestError(message, code="malformed_http")
    error.status = status if 400 <= status < 500 else 400
    return error


class JsonErrorRequestHandler(RequestHandler):
    """aiohttp's request handler, but parser errors answer in OpenAI's shape and log no request bytes."""

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        # never the message or the exception text: both quote the raw request bytes (a secret in a header)
        log.warning("refused a malformed HTTP request from %s: %s (%d %s)", request.remote,
                    type(exc).__name__ if exc is not None else "-", status, phrase)
        if request.writer.output_size > 0:
            raise ConnectionError("Response is sent already, cannot send another response with the error")
        response = error_response(_error_for(status, exc))
        response.force_close()
        return response


class _JsonErrorServer(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)


class DejaRunner(web.AppRunner):
    """``web.AppRunner`` whose connections use ``JsonErrorRequestHandler``."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorServer  # same state, one method different: no copy of aiohttp's set-up
        return server
