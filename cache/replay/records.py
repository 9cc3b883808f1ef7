"""What a replay reads: requests in time order, from a JSONL file or deja's own usage rows, and judged pairs.

A JSONL line is either an OpenAI chat-completions body (``{"model", "messages", ...}``) or a record wrapping
one: ``{"request": body, "response": completion, "label": ..., "ts": ..., "tenant": ..., "latency_ms": ...}``
(``body`` is accepted for ``request``; ``usage`` may sit beside the response). ``label`` names what the request
asks (two requests with the same label ask the same thing); it is only used to judge would-be hits.
Lines without ``ts`` keep the file's order. Lines that are not chat bodies are counted and skipped.

Judged pairs (``--judged``) are JSONL lines ``{"text_a", "text_b", "label": 1|0}`` (the Quora format), or
``{"a", "b", "same": true|false}``: whether two questions may share an answer.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ReplayInputError(Exception):
    """The replay input cannot be read at all (missing file, no usable request)."""


@dataclass(frozen=True)
class ReplayRequest:
    """One logged request, and what answering it upstream cost (when known)."""

    ts: float
    body: dict[str, Any]
    tenant: str = "default"
    namespace: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost_usd: float | None = None  # what the upstream answer cost, when the log knows it
    latency_ms: float | None = None  # how long the upstream answer took, when known
    answer_text: str | None = None  # the answer's text, to count completion tokens without usage
    label: str | None = None
    request_id: str | None = None

    @property
    def model(self) -> str:
        model = self.body.get("model")
        return model if isinstance(model, str) else str(model)


@dataclass
class ReadReport:
    """How many inputs became requests, and why the others did not."""

    read: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def normalize_text(text: str) -> str:
    """Case and spacing aside: the form two texts are compared in (as the verifier's 'identical' does)."""
    return " ".join(text.lower().split())


def _is_chat_body(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("messages"), list) and bool(value["messages"])


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _int(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def answer_text(response: Any) -> str | None:
    """The text of a chat completion's first choice (message content), if any."""
    if not isinstance(response, dict):
        return None
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    message = choices[0].get("message") or choices[0].get("delta") or {}
    content = message.get("content") if isinstance(message, dict) else None
    return content if isinstance(content, str) else None


def from_record(record: Any, position: int, *, tenant: str = "default") -> ReplayRequest | str:
    """A request from one JSONL value, or the reason it is skipped."""
    if not isinstance(record, dict):
        return "not an object"
    body = record.get("request", record.get("body", record))
    if not isinstance(body, dict) or not _is_chat_body(body):
        return "no chat body (model + messages)"
    if not isinstance(body.get("model"), str):
        return "no model"
    response = record.get("response") if body is not record else None
    usage = record.get("usage") or (response.get("usage") if isinstance(response, dict) else None) or {}
    usage = usage if isinstance(usage, dict) else {}
    label = record.get("label") if body is not record else None
    ts = _number(record.get("ts"))
    return ReplayRequest(
        ts=float(position) if ts is None else ts,
        body=body,
        tenant=str(record.get("tenant") or tenant),
        namespace=str(record.get("namespace") or ""),
        prompt_tokens=_int(usage.get("prompt_tokens")),
        completion_tokens=_int(usage.get("completion_tokens")),
        cost_usd=_number(record.get("cost_usd")),
        latency_ms=_number(record.get("latency_ms")),
        answer_text=answer_text(response),
        label=None if label is None else str(label),
        request_id=None if record.get("request_id") is None else str(record["request_id"]),
    )


def read_jsonl(path: str | Path, *, tenant: str = "default") -> tuple[list[ReplayRequest], ReadReport]:
    """Requests of a JSONL file in time order (``ts`` when given, else the file's order)."""
    report, requests = ReadReport(), []
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed below, errors reported as ours
    except OSError as exc:
        raise ReplayInputError(f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        for position, line in enumerate(handle):
            if not line.strip():
                continue
            report.read += 1
            try:
                value = json.loads(line)
            except ValueError:
                report.skipped["not JSON"] += 1
                continue
            item = from_record(value, position, tenant=tenant)
            if isinstance(item, str):
                report.skipped[item] += 1
            else:
                requests.append(item)
    requests.sort(key=lambda r: r.ts)  # stable: equal times keep the file's order
    return requests, report


def from_usage_row(row: Mapping[str, Any]) -> ReplayRequest | str:
    """A request from one ``usage_log`` row (``list_requests(include_bodies=True)``), or why it is skipped.

    deja stores the request's messages (not its other fields), so the replayed body is model + messages.
    A row that was itself a cache hit cost nothing upstream: its price is then ``saved_cache_usd`` and its
    latency is unknown.
    """
    if row.get("route") not in (None, "chat"):
        return "not a chat request"
    if int(row.get("status") or 200) >= 400:
        return "failed request (no answer to cache)"
    raw = row.get("request_body")
    if not raw:
        return "no stored messages (usage.store_messages is off)"
    try:
        messages = json.loads(raw)
    except ValueError:
        return "stored messages are not JSON"
    if isinstance(messages, dict) and messages.get("truncated"):
        return "stored messages truncated (usage.max_body_bytes)"
    body = {"model": row["model"], "messages": messages}
    if not _is_chat_body(body):
        return "no chat body (model + messages)"
    hit = row.get("cache") in ("exact", "semantic")
    response = _loads(row.get("response_body"))
    return ReplayRequest(
        ts=float(row["ts"]),
        body=body,
        tenant=str(row.get("tenant") or "default"),
        prompt_tokens=_int(row.get("prompt_tokens_sent")),
        completion_tokens=_int(row.get("completion_tokens")),
        cost_usd=_number(row.get("saved_cache_usd") if hit else row.get("cost_usd")),
        latency_ms=None if hit else _number(row.get("latency_ms")),
        answer_text=answer_text(response),
        request_id=str(row.get("request_id")),
    )


def _loads(raw: Any) -> Any:
    if not isinstance(raw, str):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def from_usage_rows(rows: Iterable[Mapping[str, Any]]) -> tuple[list[ReplayRequest], ReadReport]:
    report, requests = ReadReport(), []
    for row in rows:
        report.read += 1
        item = from_usage_row(row)
        if isinstance(item, str):
            report.skipped[item] += 1
        else:
            requests.append(item)
    requests.sort(key=lambda r: r.ts)
    return requests, report


class Judge:
    """Whether a would-be hit is right: judged pairs first, then labels, then identical text."""

    def __init__(self, pairs: Mapping[tuple[str, str], bool] | None = None) -> None:
        self.pairs: dict[tuple[str, str], bool] = dict(pairs or {})

    @staticmethod
    def key(a: str, b: str) -> tuple[str, str]:
        x, y = normalize_text(a), normalize_text(b)
        return (x, y) if x <= y else (y, x)

    @classmethod
    def load(cls, path: str | Path) -> Judge:
        pairs: dict[tuple[str, str], bool] = {}
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ReplayInputError(f"cannot read judged pairs {path}: {exc.strerror}") from exc
        for line in lines:
            if not line.strip():
                continue
            row = json.loads(line)
            a, b = row.get("text_a", row.get("a")), row.get("text_b", row.get("b"))
            same = row.get("label", row.get("same"))
            if isinstance(a, str) and isinstance(b, str) and same is not None:
                pairs[cls.key(a, b)] = bool(int(same))
        return cls(pairs)

    def right(self, query: str, cached: str, query_label: str | None, cached_label: str | None) -> bool | None:
        """True (right), False (wrong) or None (nobody judged this pair)."""
        if normalize_text(query) == normalize_text(cached):
            return True
        judged = self.pairs.get(self.key(query, cached))
        if judged is not None:
            return judged
        if query_label is not None and cached_label is not None:
            return query_label == cached_label
        return None

    @property
    def empty(self) -> bool:
        return not self.pairs
