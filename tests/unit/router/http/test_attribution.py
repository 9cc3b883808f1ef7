"""Tags and metadata of a request: LiteLLM's conventions, deja's header, clear 400s."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from router.http.attribution import attribution, without_tags
from router.http.errors import BadRequestError


def test_tags_from_body_and_both_headers_merged_without_duplicates() -> None:
    headers = CIMultiDict({"X-LiteLLM-Tags": "prod, team:search", "x-deja-tags": "eu,prod,"})
    found = attribution(headers, {"metadata": {"tags": ["app:web", "prod"], "run": 7}})
    assert found.tags == ("app:web", "prod", "team:search", "eu")
    assert found.tags_json() == '["app:web","prod","team:search","eu"]'
    assert found.metadata == {"tags": ["app:web", "prod"], "run": 7}
    assert attribution(CIMultiDict(), {}).tags_json() is None
    assert attribution(CIMultiDict(), {}).metadata_json() is None


@pytest.mark.parametrize(("headers", "body", "param"), [
    ({}, {"metadata": "prod"}, "metadata"),
    ({}, {"metadata": {"tags": "prod"}}, "metadata.tags"),
    ({}, {"metadata": {"tags": ["ok", 3]}}, "metadata.tags"),
    ({}, {"metadata": {"tags": ["x" * 129]}}, "metadata.tags"),
    ({"x-deja-tags": "bad\ttag"}, {}, "x-deja-tags"),
    ({"x-litellm-tags": ",".join(f"t{i}" for i in range(21))}, {}, "tags"),
])
def test_bad_tags_are_a_clear_400(headers: dict[str, str], body: dict, param: str) -> None:
    with pytest.raises(BadRequestError) as info:
        attribution(CIMultiDict(headers), body)
    assert info.value.status == 400 and info.value.param == param


def test_tags_are_not_sent_upstream() -> None:
    body = {"model": "m", "metadata": {"tags": ["a"], "run": "7"}}
    assert without_tags(body) == {"model": "m", "metadata": {"run": "7"}}
    assert without_tags({"model": "m", "metadata": {"tags": ["a"]}}) == {"model": "m"}
    plain = {"model": "m", "metadata": {"run": "7"}}
    assert without_tags(plain) is plain
