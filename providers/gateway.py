"""The LiteLLM ``Router`` built from deja's settings, behind a small typed interface.

``Gateway`` owns model groups, deployments, retries, fallbacks, cooldowns and timeouts (all LiteLLM's, set from
``router_settings``), and hands back OpenAI-shaped dicts plus which deployment answered and what it cost.
With no model configured, the offline ``sim`` model is the only group.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
from collections.abc import AsyncGenerator  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402
import litellm  # noqa: E402

from providers.direct import DejaRouter, DirectStream  # noqa: E402
from providers.errors import ProviderError, UnknownModelError, translate  # noqa: E402
from providers.interface import Served  # noqa: E402
from providers.shape import clean_chunk, clean_completion  # noqa: E402
from providers.sim import PROVIDER as SIM_PROVIDER  # noqa: E402
from providers.sim import SimLLM  # noqa: E402

log = logging.getLogger("deja.providers")
litellm.suppress_debug_info = True
litellm.telemetry = False
litellm.disable_hf_tokenizer_download = True  # never fetch a tokenizer at run time: count with cl100k instead
litellm.turn_off_message_logging = True  # LiteLLM's logging objects keep no prompts (deja logs its own way)

_ROUTER_DEFAULTS: dict[str, Any] = {"num_retries": 2, "timeout": 600, "cooldown_time": 30, "allowed_fails": 3,
                                    "retry_after": 0}


def _price(value: Any) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        return 0.0
    return rate if math.isfinite(rate) and rate >= 0 else 0.0


def _deployment_rates(entry: dict[str, Any]) -> tuple[float, float] | None:
    """Prices set on a deployment (``input_cost_per_token``/``output_cost_per_token``): ``litellm_params``
    first, then ``model_info``, as LiteLLM's own proxy reads them; None when neither sets one."""
    for source in (entry.get("litellm_params") or {}, entry.get("model_info") or {}):
        prompt, completion = source.get("input_cost_per_token"), source.get("output_cost_per_token")
        if prompt is not None or completion is not None:
            return _price(prompt), _price(completion)
    return None


class Gateway:
    """The ``providers.interface.Provider`` that deja serves with: LiteLLM's Router (plus the direct path)."""

    def __init__(self, model_list: list[dict[str, Any]], *, router_settings: dict[str, Any] | None = None,
                 litellm_settings: dict[str, Any] | None = None, sim_delay_ms: float = 300.0,
                 sim_word_delay_ms: float = 15.0, direct_openai: bool = True) -> None:
        self.sim = SimLLM(delay_ms=sim_delay_ms, word_delay_ms=sim_word_delay_ms)
        if not model_list:
            model_list = [{"model_name": "sim", "litellm_params": {"model": "sim/sim"}}]
        self.model_list = [self._with_id(entry, i) for i, entry in enumerate(model_list)]
        self._by_id = {e["model_info"]["id"]: e for e in self.model_list}
        self.groups = sorted({e["model_name"] for e in self.model_list})
        self._register_sim()
        for key, value in (litellm_settings or {}).items():
            if key in {"drop_params", "modify_params", "request_timeout", "num_retries", "set_verbose"}:
                setattr(litellm, key, value)
        settings = {**_ROUTER_DEFAULTS, **(router_settings or {})}
        try:
            self.router = DejaRouter(model_list=self.model_list, direct=direct_openai, **settings)
        except TypeError as exc:
            raise ValueError(f"router_settings: {exc}") from exc
        self._http: aiohttp.ClientSession | None = None
        self._price_cache: dict[str, tuple[float, float]] = {}

    @staticmethod
    def _with_id(entry: dict[str, Any], index: int) -> dict[str, Any]:
        info = dict(entry.get("model_info") or {})
        info.setdefault("id", f"{entry['model_name']}#{index}")
        return {**entry, "litellm_params": dict(entry["litellm_params"]), "model_info": info}

    def _register_sim(self) -> None:
        others = [p for p in litellm.custom_provider_map if p.get("provider") != SIM_PROVIDER]
        litellm.custom_provider_map = [*others, {"provider": SIM_PROVIDER, "custom_handler": self.sim}]
        litellm.utils.custom_llm_setup()

    def has_model(self, name: str) -> bool:
        return name in self.groups

    def check_model(self, name: str) -> None:
        if not self.has_model(name):
            raise UnknownModelError(f"The model `{name}` does not exist or you do not have access to it.")

    def first_deployment(self, group: str) -> str | None:
        for entry in self.model_list:
            if entry["model_name"] == group:
                return str(entry["model_info"]["id"])
        return None

    def litellm_model(self, group: str) -> str:
        for entry in self.model_list:
            if entry["model_name"] == group:
                return str(entry["litellm_params"]["model"])
        return group

    def _served(self, hidden: dict[str, Any] | None) -> Served:
        hidden = hidden or {}
        deployment_id = hidden.get("model_id")
        entry = self._by_id.get(deployment_id or "")
        return Served(deployment=deployment_id, provider=hidden.get("custom_llm_provider"),
                      litellm_model=entry["litellm_params"]["model"] if entry else hidden.get("litellm_model_name"))

    def cost(self, served: Served, group: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for these tokens: the serving deployment's own prices (the group's first deployment when none
        served, e.g. a cache hit), else LiteLLM's bundled table for its model."""
        entry = self._by_id.get(served.deployment or "") or self._by_id.get(self.first_deployment(group) or "")
        own = _deployment_rates(entry) if entry is not None else None
        prompt_rate, completion_rate = own or self._rates(served.litellm_model or self.litellm_model(group))
        return prompt_tokens * prompt_rate + completion_tokens * completion_rate

    def _rates(self, model: str) -> tuple[float, float]:
        """USD per prompt token and per completion token, from LiteLLM's bundled price table (cached)."""
        rates = self._price_cache.get(model)
        if rates is None:
            rates = (0.0, 0.0)
            if not model.startswith(f"{SIM_PROVIDER}/"):
                try:
                    prompt, _ = litellm.cost_per_token(model=model, prompt_tokens=1_000_000, completion_tokens=0)
                    _, completion = litellm.cost_per_token(model=model, prompt_tokens=0,
                                                           completion_tokens=1_000_000)
                    rates = (float(prompt) / 1_000_000, float(completion) / 1_000_000)
                except Exception:  # unknown price: count as free rather than fail the request
                    rates = (0.0, 0.0)
            self._price_cache[model] = rates
        return rates

    async def complete(self, body: dict[str, Any]) -> tuple[dict[str, Any], Served]:
        self.check_model(body["model"])
        try:
            response = await self.router.acompletion(**_router_kwargs(body))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate(exc) from exc
        served = self._served(getattr(response, "_hidden_params", None))
        data = clean_completion(response.model_dump())
        usage = data.get("usage") or {}
        served.cost_usd = self.cost(served, body["model"], usage.get("prompt_tokens", 0),
                                    usage.get("completion_tokens", 0))
        return data, served

    async def stream(self, body: dict[str, Any], served: Served) -> AsyncGenerator[dict[str, Any], None]:
        """Yield cleaned chunks; ``served`` is filled in once the upstream answered."""
        self.check_model(body["model"])
        try:
            upstream = await self.router.acompletion(**_router_kwargs(body))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate(exc) from exc
        found = self._served(getattr(upstream, "_hidden_params", None))
        served.deployment, served.provider, served.litellm_model = found.deployment, found.provider, found.litellm_model
        try:
            async for chunk in upstream:
                yield clean_chunk(chunk if isinstance(chunk, dict) else chunk.model_dump())
        except (asyncio.CancelledError, GeneratorExit):
            await _close_stream(upstream)
            raise
        except ProviderError:
            raise
        except Exception as exc:
            await _close_stream(upstream)
            raise translate(exc) from exc

    async def embed(self, body: dict[str, Any]) -> tuple[dict[str, Any], Served]:
        self.check_model(body["model"])
        try:
            response = await self.router.aembedding(**_router_kwargs(body))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate(exc) from exc
        served = self._served(getattr(response, "_hidden_params", None))
        data = response.model_dump()
        out = {"object": "list", "data": [
            {"object": "embedding", "index": d.get("index", i), "embedding": d.get("embedding")}
            for i, d in enumerate(data.get("data") or [])], "model": data.get("model") or body["model"]}
        usage = data.get("usage") or {}
        out["usage"] = {"prompt_tokens": int(usage.get("prompt_tokens") or 0),
                        "total_tokens": int(usage.get("total_tokens") or 0)}
        served.cost_usd = self.cost(served, body["model"], out["usage"]["prompt_tokens"], 0)
        return out, served

    async def ping(self) -> dict[str, bool]:
        """Reachability of each deployment with an ``api_base`` (any HTTP answer counts); others are assumed up."""
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        results: dict[str, bool] = {}
        for entry in self.model_list:
            base = entry["litellm_params"].get("api_base")
            name = entry["model_info"]["id"]
            if not base:
                results[name] = True
                continue
            try:
                async with self._http.get(str(base).rstrip("/") + "/models") as response:
                    results[name] = response.status < 500
            except (aiohttp.ClientError, TimeoutError):
                results[name] = False
        return results

    async def close(self) -> None:
        await self.router.aclose_direct()
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._unregister_callbacks()

    def _unregister_callbacks(self) -> None:
        """Take this Router's callbacks off LiteLLM's process-wide lists: they are capped at 100 entries, and a
        process that builds many apps (the tests) would otherwise stop registering new Routers' cooldowns."""
        for name in ("success_callback", "_async_success_callback", "failure_callback", "_async_failure_callback"):
            entries = getattr(litellm, name, None)
            if isinstance(entries, list):
                entries[:] = [c for c in entries if getattr(c, "__self__", None) is not self.router]


# Request fields that OpenAI's API also has: kept although LiteLLM knows them too
_OPENAI_FIELDS = frozenset({"model", "messages", "input", "metadata", "user", "stream", "stream_options", "n",
                            "tools", "tool_choice", "functions", "function_call", "temperature", "top_p", "stop",
                            "seed", "max_tokens", "max_completion_tokens", "response_format", "logprobs",
                            "top_logprobs", "logit_bias", "presence_penalty", "frequency_penalty", "modalities",
                            "audio", "prediction", "reasoning_effort", "service_tier", "store", "parallel_tool_calls",
                            "web_search_options", "verbosity", "prompt_cache_key", "safety_identifier",
                            "dimensions", "encoding_format"})
# What a client must not steer: LiteLLM's own parameters (credentials, api_base, callbacks, mock answers, retries,
# fallbacks, timeouts, prices) and the Router's. They are the operator's, set in the config.
_CONTROL_FIELDS = frozenset(litellm.main.all_litellm_params) | {
    "timeout", "specific_deployment", "fallbacks", "context_window_fallbacks", "content_policy_fallbacks", "priority",
    "model_group_alias", "extra_headers", "extra_body", "extra_query", "base_url", "organization", "api_type",
    "azure_ad_token", "deployment_id", "litellm_params", "deja_body"}


def client_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The client's request without the fields only the operator may set (see ``_CONTROL_FIELDS``)."""
    return {k: v for k, v in body.items()
            if k in _OPENAI_FIELDS or not (k in _CONTROL_FIELDS or k.startswith(("mock_", "aws_", "vertex_")))}


def _router_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for the Router: the client's fields, plus ``deja_body`` for the direct path. The Router
    writes its own keys into ``metadata``: it gets a copy, so the body sent upstream keeps the client's."""
    clean = client_fields(body)
    kwargs = dict(clean)
    if isinstance(clean.get("metadata"), dict):
        kwargs["metadata"] = dict(clean["metadata"])
    kwargs["deja_body"] = clean
    return kwargs


async def _close_stream(upstream: Any) -> None:
    """Close the upstream HTTP stream now, so the provider stops generating (and billing)."""
    if isinstance(upstream, DirectStream):
        await upstream.aclose()
        return
    inner = getattr(upstream, "completion_stream", None)
    for target in (inner, getattr(inner, "response", None)):
        closer = getattr(target, "aclose", None) or getattr(target, "close", None)
        if closer is None:
            continue
        try:
            result = closer()
            if asyncio.iscoroutine(result):
                await result
        except Exception:  # closing is best effort; the connection is dropped either way
            pass
        return
