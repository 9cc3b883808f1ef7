from __future__ import annotations

import json
from pathlib import Path

import pytest

from cache.replay.records import Judge, ReplayInputError, from_usage_rows, read_jsonl

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "What is deja?"}]}


def _write(path: Path, lines: list[object]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_jsonl_reads_bare_bodies_and_records_in_time_order(tmp_path: Path) -> None:
    answer = {"choices": [{"message": {"role": "assistant", "content": "A cache."}}],
              "usage": {"prompt_tokens": 11, "completion_tokens": 7}}
    path = _write(tmp_path / "t.jsonl", [
        {"request": BODY, "response": answer, "label": 3, "ts": 50, "latency_ms": 900, "tenant": "acme"},
        BODY,  # no ts: its line number (1)
        "not json",
        {"messages": []},
        {"body": {"messages": [{"role": "user", "content": "x"}]}},
    ])
    requests, report = read_jsonl(path)
    assert [r.ts for r in requests] == [1.0, 50.0]
    first, second = requests
    assert (first.prompt_tokens, first.label, first.tenant) == (None, None, "default")
    assert (second.prompt_tokens, second.completion_tokens, second.latency_ms) == (11, 7, 900.0)
    assert (second.label, second.tenant, second.answer_text) == ("3", "acme", "A cache.")
    assert report.read == 5
    assert report.skipped == {"not JSON": 1, "no chat body (model + messages)": 1, "no model": 1}


def test_missing_file_is_a_replay_input_error(tmp_path: Path) -> None:
    with pytest.raises(ReplayInputError):
        read_jsonl(tmp_path / "absent.jsonl")


def _row(**over: object) -> dict[str, object]:
    row: dict[str, object] = {
        "request_id": "r1", "ts": 10.0, "route": "chat", "tenant": "t", "model": "gpt-4o-mini", "cache": "miss",
        "status": 200, "prompt_tokens_sent": 20, "completion_tokens": 5, "cost_usd": 0.01,
        "saved_cache_usd": 0.0, "latency_ms": 800.0, "request_body": json.dumps(BODY["messages"]),
        "response_body": json.dumps({"choices": [{"message": {"content": "hi"}}]})}
    row.update(over)
    return row


def test_usage_rows_become_requests_and_hits_keep_their_saved_price() -> None:
    rows = [_row(), _row(request_id="r2", ts=5.0, cache="semantic", cost_usd=0.0, saved_cache_usd=0.02,
                         latency_ms=3.0),
            _row(request_id="r3", status=502), _row(request_id="r4", request_body=None),
            _row(request_id="r5", request_body=json.dumps({"truncated": True, "bytes": 99, "head": "["}))]
    requests, report = from_usage_rows(rows)
    assert [r.request_id for r in requests] == ["r2", "r1"]
    hit, miss = requests
    assert hit.body == {"model": "gpt-4o-mini", "messages": BODY["messages"]} and hit.tenant == "t"
    assert (hit.cost_usd, hit.latency_ms) == (0.02, None)  # a hit's own latency says nothing of upstream
    assert (miss.cost_usd, miss.latency_ms, miss.prompt_tokens, miss.answer_text) == (0.01, 800.0, 20, "hi")
    assert sum(report.skipped.values()) == 3 and report.read == 5


def test_judge_prefers_judged_pairs_then_labels_then_identical_text(tmp_path: Path) -> None:
    path = _write(tmp_path / "pairs.jsonl", [
        {"text_a": "How do I learn Python?", "text_b": "How can I learn Python?", "label": 1},
        {"a": "Best phone 2017?", "b": "Best phone 2018?", "same": False}])
    judge = Judge.load(path)
    assert judge.right("how can i learn python?", "How do I  learn Python?", "1", "2") is True  # judged wins
    assert judge.right("Best phone 2018?", "Best phone 2017?", "x", "x") is False
    assert judge.right("What is X?", "Tell me X", "7", "7") is True
    assert judge.right("What is X?", "Tell me X", "7", "8") is False
    assert judge.right("What is X?", "Tell me X", None, "8") is None
    assert judge.right("What is X?", "what is   x?", None, None) is True
