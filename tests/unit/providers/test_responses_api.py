"""The Responses API's shapes: input as chat messages, a chat answer as a response, the replayed event stream."""

from __future__ import annotations

from providers import responses_api as rapi


def test_plain_input_becomes_messages_and_anything_else_does_not() -> None:
    assert rapi.input_messages({"input": "hi", "instructions": "be brief"}) == [
        {"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    items = [{"role": "developer", "content": "rules"},
             {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "a"},
                                                              {"type": "input_text", "text": "b"}]}]
    assert rapi.input_messages({"input": items}) == [{"role": "system", "content": "rules"},
                                                     {"role": "user", "content": "a\nb"}]
    image = [{"role": "user", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}]
    call_output = [{"type": "function_call_output", "call_id": "c1", "output": "42"}]
    assert rapi.input_messages({"input": image}) is None
    assert rapi.input_messages({"input": call_output}) is None
    assert rapi.input_messages({"input": []}) is None


def test_chat_answer_as_response() -> None:
    completion = {"model": "sim", "choices": [{"message": {"content": "Hello"}, "finish_reason": "length"}],
                  "usage": {"prompt_tokens": 3, "completion_tokens": 1}}
    response = rapi.chat_to_response(completion, {"model": "sim", "input": "x", "max_output_tokens": 1})
    assert response["object"] == "response" and response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert rapi.output_text(response) == "Hello"
    assert response["usage"]["input_tokens"] == 3 and response["usage"]["total_tokens"] == 4


def test_replay_is_the_event_stream_openai_sends() -> None:
    skeleton = rapi.response_skeleton({"input": "q"}, model="m")
    call = {"id": "fc_1", "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{\"a\": 1}",
            "status": "completed"}
    text = "one two three four five six"
    response = rapi.finished(skeleton, text, "stop", {"prompt_tokens": 1, "completion_tokens": 6})
    response["output"] = [call, *response["output"]]
    events = rapi.replay_events(response, words_per_delta=4)
    kinds = [e["type"] for e in events]
    assert kinds == ["response.created", "response.in_progress",
                     "response.output_item.added", "response.function_call_arguments.delta",
                     "response.function_call_arguments.done", "response.output_item.done",
                     "response.output_item.added", "response.content_part.added",
                     "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
                     "response.content_part.done", "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = [e["delta"] for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(deltas) == text and all(e["output_index"] == 1 for e in events[6:13])
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    assert events[-1]["response"] == response
