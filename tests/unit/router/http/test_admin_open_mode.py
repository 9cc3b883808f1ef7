"""Without a master key, stored usage and prompts are readable from this machine only."""

from __future__ import annotations

from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from router.appkeys import AUTH
from router.auth.keys import Authenticator
from router.http import errors as err
from router.http.admin import _reader


async def _no_keys(_digest: str) -> Any:
    return None


def _request(peer: str, master_key: str | None, headers: dict[str, str] | None = None) -> web.Request:
    app = web.Application()
    app[AUTH] = Authenticator(master_key=master_key, lookup=_no_keys)
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (peer, 40000) if name == "peername" else default
    return make_mocked_request("GET", "/admin/requests?bodies=true", app=app, transport=transport,
                               headers=headers or {})


@pytest.mark.parametrize("peer", ["127.0.0.1", "::1"])
async def test_open_mode_lets_local_clients_read(peer: str) -> None:
    principal = await _reader(_request(peer, None))
    assert principal.key_id is None


@pytest.mark.parametrize("peer", ["10.1.2.3", "192.168.0.7", "2001:db8::5"])
async def test_open_mode_refuses_remote_clients(peer: str) -> None:
    with pytest.raises(err.PermissionDeniedError, match="only from this machine"):
        await _reader(_request(peer, None))


async def test_master_key_reads_from_anywhere() -> None:
    principal = await _reader(_request("10.1.2.3", "sk-master", {"Authorization": "Bearer sk-master"}))
    assert principal.is_master
