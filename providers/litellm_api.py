"""Every LiteLLM touchpoint that is not LiteLLM's public API, in one module.

deja depends on LiteLLM's Router internals in a few places (the direct path overrides two private methods and
calls several more) and on process-wide module settings. They all go through the names below, and
``tests/unit/providers/test_litellm_api.py`` pins the signatures and attributes they rely on, so a LiteLLM upgrade
that changes them fails there, loudly, instead of silently breaking routing.

LiteLLM is configured once per process (``configure``): its module-level flags are process-wide, so a second,
different configuration is an error (``LiteLLMConfigConflict``), never a silent overwrite. The offline ``sim``
provider is registered here, once, too.

The import-order guard lives here and in ``providers/__init__.py`` only: LiteLLM fetches its price map from the
network at import unless ``LITELLM_LOCAL_MODEL_COST_MAP`` is set first.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import contextlib  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Mapping  # noqa: E402
from typing import Any  # noqa: E402

import litellm  # noqa: E402
from litellm.router_utils.router_callbacks.track_deployment_metrics import (  # noqa: E402
    increment_deployment_successes_for_current_minute,
)

#: ``litellm_settings`` keys deja applies to the ``litellm`` module (process-wide).
MODULE_SETTINGS = frozenset({"drop_params", "modify_params", "request_timeout", "num_retries", "set_verbose"})
#: Flags deja always sets: no telemetry, no tokenizer downloads, no prompts in LiteLLM's logging objects.
_FIXED = {"suppress_debug_info": True, "telemetry": False, "disable_hf_tokenizer_download": True,
          "turn_off_message_logging": True}
#: Every parameter LiteLLM's ``completion`` accepts beyond OpenAI's (credentials, routing, mocks, callbacks...).
ALL_LITELLM_PARAMS: frozenset[str] = frozenset(litellm.main.all_litellm_params)

_lock = threading.Lock()
_configured: dict[str, Any] | None = None


class LiteLLMConfigConflict(ValueError):
    """A second, different process-wide LiteLLM configuration in one process."""


def configure(litellm_settings: Mapping[str, Any] | None = None) -> None:
    """Apply deja's fixed flags and the module-level ``litellm_settings``, once per process; the same settings
    again are a no-op, different ones raise ``LiteLLMConfigConflict``."""
    global _configured
    wanted = {k: v for k, v in (litellm_settings or {}).items() if k in MODULE_SETTINGS}
    with _lock:
        if _configured is not None:
            if _configured != wanted:
                raise LiteLLMConfigConflict(
                    f"litellm_settings {wanted} conflict with {_configured}, already applied in this process: "
                    "LiteLLM's module settings are process-wide; run one configuration per process")
            return
        for key, value in {**_FIXED, **wanted}.items():
            setattr(litellm, key, value)
        _configured = wanted


def register_provider(name: str, handler: Any) -> None:
    """Register a ``CustomLLM`` under ``name`` (``model: name/...``), once per process."""
    with _lock:
        if any(p.get("provider") == name for p in litellm.custom_provider_map):
            return
        litellm.custom_provider_map = [*litellm.custom_provider_map, {"provider": name, "custom_handler": handler}]
        litellm.utils.custom_llm_setup()


def unregister_callbacks(owner: object) -> None:
    """Remove ``owner``'s bound methods from LiteLLM's success and failure callback lists (a closed Router's)."""
    for name in ("success_callback", "_async_success_callback", "failure_callback", "_async_failure_callback"):
        entries = getattr(litellm, name, None)
        if isinstance(entries, list):
            entries[:] = [c for c in entries if getattr(c, "__self__", None) is not owner]


def cost_per_token(model: str) -> tuple[float, float]:
    """USD per prompt token and per completion token from LiteLLM's bundled price map (raises when unknown)."""
    prompt, _ = litellm.cost_per_token(model=model, prompt_tokens=1_000_000, completion_tokens=0)
    _, completion = litellm.cost_per_token(model=model, prompt_tokens=0, completion_tokens=1_000_000)
    return float(prompt) / 1_000_000, float(completion) / 1_000_000


def token_counter(model: str, text: str) -> int:
    return int(litellm.token_counter(model=model, text=text))


def provider_of(model: str) -> str | None:
    """LiteLLM's provider inference for a bare model name (``gpt-4o`` → ``openai``), None when unknown."""
    try:
        _, provider, _, _ = litellm.get_llm_provider(model=model)
    except Exception:  # unknown to LiteLLM
        return None
    return str(provider)


def text_completion_model(model: str) -> bool:
    """Whether LiteLLM sends a text completion for ``model`` to ``/v1/completions`` as it is (a
    ``text-completion-openai/`` deployment or an OpenAI instruct model); otherwise it rewrites the prompt as a chat
    message, which only text can become."""
    if model.startswith("text-completion-openai/"):
        return True
    return model.removeprefix("openai/") in litellm.open_ai_text_completion_models


def reasoning_model(model: str) -> bool:
    """OpenAI's reasoning models (o-series, gpt-5) take ``max_completion_tokens`` only."""
    try:
        from litellm.llms.openai.chat.gpt_5_transformation import OpenAIGPT5Config
        from litellm.llms.openai.chat.o_series_transformation import OpenAIOSeriesConfig

        return bool(OpenAIOSeriesConfig().is_model_o_series_model(model)
                    or OpenAIGPT5Config.is_model_gpt_5_model(model))
    except Exception:  # another LiteLLM layout: the names OpenAI uses
        name = model.rsplit("/", 1)[-1]
        return name.startswith(("o1", "o3", "o4", "gpt-5"))


def router_arguments() -> frozenset[str]:
    """What ``litellm.Router`` takes (``router_settings`` keys), as LiteLLM's proxy checks them."""
    return frozenset(litellm.Router.get_valid_args()) - {"model_list", "search_tools"}


def is_module_setting(name: str) -> bool:
    """Whether ``name`` is a ``litellm`` module attribute (a ``litellm_settings`` key LiteLLM's proxy would set)."""
    return hasattr(litellm, name)


class RouterHooks(litellm.Router):
    """LiteLLM's Router with each private member deja uses behind one typed, documented name.

    Subclasses override ``route_completion`` / ``route_embedding`` (called by the Router's own ``_acompletion`` /
    ``_aembedding`` step, after its retries, fallbacks and timeouts are set up) and may call the helpers below.
    """

    async def _acompletion(self, model: str, messages: list[dict[str, str]], **kwargs: Any) -> Any:
        return await self.route_completion(model, messages, kwargs)

    async def _aembedding(self, input: str | list[Any], model: str, **kwargs: Any) -> Any:
        return await self.route_embedding(input, model, kwargs)

    async def route_completion(self, model: str, messages: list[dict[str, str]], kwargs: dict[str, Any]) -> Any:
        return await super()._acompletion(model, messages, **kwargs)

    async def route_embedding(self, input: str | list[Any], model: str, kwargs: dict[str, Any]) -> Any:
        return await super()._aembedding(input, model, **kwargs)

    def _update_kwargs_with_deployment(self, deployment: dict[str, Any], kwargs: dict[str, Any],
                                       function_name: str | None = None) -> None:
        # LiteLLM's own path, once the deployment is chosen: the subclass adjusts the call's kwargs after LiteLLM
        super()._update_kwargs_with_deployment(deployment=deployment, kwargs=kwargs, function_name=function_name)
        self.with_deployment(dict(deployment), kwargs)
        kwargs.pop("deja_headers", None)  # deja's own key never reaches litellm.acompletion

    def with_deployment(self, deployment: dict[str, Any], kwargs: dict[str, Any]) -> None:
        """Called on LiteLLM's own path with the chosen deployment and the call's kwargs (a copy per attempt)."""

    async def cooling_down(self) -> set[str]:
        """Ids of the deployments the Router is cooling down now."""
        from litellm.router_utils.cooldown_handlers import _async_get_cooldown_deployments

        return {str(d) for d in await _async_get_cooldown_deployments(self, parent_otel_span=None)}

    async def pick_deployment(self, model: str, kwargs: dict[str, Any], **choice: Any) -> dict[str, Any]:
        """The deployment the Router's strategy picks (cooldowns honoured), as the Router's own call would."""
        deployment = await self.async_get_available_deployment(
            model=model, specific_deployment=kwargs.pop("specific_deployment", None), request_kwargs=kwargs, **choice)
        return dict(deployment)

    def concurrency_limit(self, deployment: dict[str, Any], kwargs: dict[str, Any]) -> Any:
        """The deployment's ``max_parallel_requests`` semaphore, or a no-op context."""
        semaphore = self._get_client(deployment=deployment, kwargs=kwargs, client_type="max_parallel_requests")
        return semaphore if semaphore is not None and hasattr(semaphore, "acquire") else contextlib.nullcontext()

    async def pre_call_checks(self, deployment: dict[str, Any]) -> None:
        """The routing strategy's checks before a call (its rpm/tpm accounting)."""
        await self.async_routing_strategy_pre_call_checks(deployment=deployment, parent_otel_span=None)

    def blocked_by_content_policy(self, model: str, response: Any, kwargs: dict[str, Any]) -> bool:
        """Whether the Router would raise its content-policy error for this answer (to fall back)."""
        return bool(self._should_raise_content_policy_error(model=model, response=response, kwargs=kwargs))

    def timeout_for(self, kwargs: dict[str, Any], params: dict[str, Any]) -> float | None:
        """The call's timeout in LiteLLM's order (request, deployment ``stream_timeout``/``timeout``, Router)."""
        value = self._get_timeout(kwargs=kwargs, data=params)
        return None if value is None else float(value)

    def record_success(self, deployment: dict[str, Any]) -> None:
        increment_deployment_successes_for_current_minute(self, str(deployment["model_info"]["id"]))

    def record_failure(self, deployment: dict[str, Any], exc: Exception, kwargs: dict[str, Any],
                       started: float) -> None:
        """What LiteLLM's failure callback does (count the failure, maybe cool the deployment down with its own
        ``cooldown_time``), and what ``Router._acompletion`` does: name the deployment and its retry count on the
        exception."""
        metadata = {**(kwargs.get("metadata") or {}), "deployment": deployment["litellm_params"]["model"]}
        callback_kwargs = {"exception": exc, "litellm_params": {
            **deployment["litellm_params"], "model_info": deployment["model_info"], "metadata": metadata}}
        try:
            self.deployment_callback_on_failure(callback_kwargs, None, started, time.time())
        except Exception:  # bookkeeping must not hide the upstream's error
            pass
        self._set_deployment_num_retries_on_exception(exc, deployment)
        self._stamp_failed_deployment_id_with_effective_model_info(exc, deployment, kwargs)


#: The private members above rely on, with the parameters they are called with (pinned by a test).
PINNED_ROUTER_MEMBERS: dict[str, tuple[str, ...]] = {
    "_acompletion": ("model", "messages"),
    "_aembedding": ("input", "model"),
    "async_get_available_deployment": ("model", "specific_deployment", "request_kwargs", "messages", "input"),
    "_get_client": ("deployment", "kwargs", "client_type"),
    "async_routing_strategy_pre_call_checks": ("deployment", "parent_otel_span"),
    "_should_raise_content_policy_error": ("model", "response", "kwargs"),
    "_get_timeout": ("kwargs", "data"),
    "deployment_callback_on_failure": ("kwargs", "completion_response", "start_time", "end_time"),
    "_set_deployment_num_retries_on_exception": ("exception", "deployment"),
    "_stamp_failed_deployment_id_with_effective_model_info": ("exception", "deployment", "kwargs"),
    "_update_kwargs_with_deployment": ("deployment", "kwargs", "function_name"),
}
