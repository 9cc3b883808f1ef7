"""The LiteLLM touchpoints deja relies on, pinned: an upgrade that changes them fails here, in one place."""

from __future__ import annotations

import inspect

import litellm
import pytest

from providers import litellm_api
from providers.direct import DejaRouter
from providers.gateway import Gateway


@pytest.mark.parametrize("name", sorted(litellm_api.PINNED_ROUTER_MEMBERS))
def test_router_private_members_keep_their_parameters(name: str) -> None:
    member = getattr(litellm.Router, name, None)
    assert callable(member), f"litellm.Router.{name} is gone"
    parameters = set(inspect.signature(member).parameters)
    missing = set(litellm_api.PINNED_ROUTER_MEMBERS[name]) - parameters
    assert not missing, f"litellm.Router.{name} no longer takes {sorted(missing)}"


def test_router_hooks_override_the_routers_own_call_step() -> None:
    # the Router's retry/fallback wrapper calls self._acompletion / self._aembedding: ours must be what it finds
    assert DejaRouter._acompletion is litellm_api.RouterHooks._acompletion
    assert DejaRouter._aembedding is litellm_api.RouterHooks._aembedding
    assert litellm_api.RouterHooks._acompletion is not litellm.Router._acompletion
    source = inspect.getsource(litellm.Router.acompletion) + inspect.getsource(litellm.Router.aembedding)
    assert "self._acompletion" in source and "self._aembedding" in source


def test_module_attributes_deja_sets_or_reads_exist() -> None:
    for name in ("suppress_debug_info", "telemetry", "disable_hf_tokenizer_download", "turn_off_message_logging",
                 "custom_provider_map", "drop_params", "modify_params", "model_cost"):
        assert hasattr(litellm, name), name
    assert callable(litellm.utils.custom_llm_setup)
    assert callable(litellm.Router.discard)  # Gateway.close unhooks its Router from LiteLLM's global callbacks
    assert {"api_base", "api_key", "mock_response"} <= litellm_api.ALL_LITELLM_PARAMS


def test_configuration_is_once_per_process_and_a_conflict_is_an_error() -> None:
    litellm_api.configure({})  # what every Gateway in this test process asks for
    litellm_api.configure({"unrelated": 1})  # keys that are not module settings do not count
    assert litellm.telemetry is False and litellm.turn_off_message_logging is True
    with pytest.raises(litellm_api.LiteLLMConfigConflict, match="drop_params"):
        litellm_api.configure({"drop_params": True})
    with pytest.raises(litellm_api.LiteLLMConfigConflict):
        Gateway([], litellm_settings={"drop_params": True})
    assert litellm.drop_params is not True


def test_the_sim_provider_is_registered_once_with_delays_per_deployment() -> None:
    fast = Gateway([], sim_delay_ms=1, sim_word_delay_ms=0)
    slow = Gateway([], sim_delay_ms=500)
    sims = [p for p in litellm.custom_provider_map if p["provider"] == "sim"]
    assert len(sims) == 1
    assert fast.model_list[0]["litellm_params"]["sim_delay_ms"] == 1
    assert slow.model_list[0]["litellm_params"]["sim_delay_ms"] == 500


def test_cost_and_provider_inference() -> None:
    prompt, completion = litellm_api.cost_per_token("gpt-4o-mini")
    assert 0 < prompt < completion
    assert litellm_api.provider_of("gpt-4o-mini") == "openai"
    assert litellm_api.provider_of("no-such-model-xyz") is None
    assert litellm_api.reasoning_model("o3-mini") and not litellm_api.reasoning_model("gpt-4o")


async def test_a_closed_gateway_leaves_no_callbacks_behind() -> None:
    before = len(litellm._async_failure_callback)
    for _ in range(3):
        await Gateway([]).close()
    assert len(litellm._async_failure_callback) == before
