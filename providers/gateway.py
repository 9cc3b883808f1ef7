"""The LiteLLM ``Router`` built from deja's settings, behind a small typed interface.

``Gateway`` owns model groups, deployments, retries, fallbacks, cooldowns and timeouts (all LiteLLM's, set from
``router_settings``), and hands back OpenAI-shaped dicts plus which deployment answered and what it cost.
With no model configured, the offline ``sim`` model is the only group.
"""

from __future__ import annotations

import asyncio
import logging
import math
import warnings
from collections.abc import AsyncGenerator
from typing import Any

import aiohttp

from providers import endpoints, litellm_api
from providers.direct import DejaRouter, DirectStream
from providers.errors import ProviderBadRequestError, ProviderError, UnknownModelError, translate
from providers.interface import Deployment, Served
from providers.models import ModelNames
from providers.shape import clean_chunk, clean_completion
from providers.sim import PROVIDER as SIM_PROVIDER
from providers.sim import SimLLM

log = logging.getLogger("deja.providers")
# LiteLLM dumps its Responses and text-completion objects with usage of the other API's shape; pydantic warns on
# stderr for each (the values are right: deja reads them from the dicts)
warnings.filterwarnings("ignore", message="Pydantic serializer warnings", category=UserWarning)

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
        litellm_api.configure(litellm_settings)
        litellm_api.register_provider(SIM_PROVIDER, SimLLM())
        if not model_list:
            model_list = [{"model_name": "sim", "litellm_params": {"model": "sim/sim"}}]
        sim_delays = {"sim_delay_ms": sim_delay_ms, "sim_word_delay_ms": sim_word_delay_ms}
        self.model_list = [self._with_id(entry, i, sim_delays) for i, entry in enumerate(model_list)]
        self._by_id = {e["model_info"]["id"]: e for e in self.model_list}
        self.names = ModelNames(self.model_list, (router_settings or {}).get("model_group_alias"))
        self.groups = list(self.names.groups)  # concrete groups; aliases and wildcards: see self.names
        settings = {**_ROUTER_DEFAULTS, **(router_settings or {})}
        try:
            self.router = DejaRouter(model_list=self.model_list, direct=direct_openai, **settings)
        except TypeError as exc:
            raise ValueError(f"router_settings: {exc}") from exc
        self._http: aiohttp.ClientSession | None = None
        self._price_cache: dict[str, tuple[float, float]] = {}

    @staticmethod
    def _with_id(entry: dict[str, Any], index: int, sim_delays: dict[str, float]) -> dict[str, Any]:
        """The deployment with an id; a ``sim/`` deployment gets the configured delays unless it sets its own
        (the sim handler is one per process; its delays travel with each deployment)."""
        info = dict(entry.get("model_info") or {})
        info.setdefault("id", f"{entry['model_name']}#{index}")
        params = dict(entry["litellm_params"])
        if str(params.get("model", "")).startswith(f"{SIM_PROVIDER}/"):
            params = {**sim_delays, **params}
        return {**entry, "litellm_params": params, "model_info": info}

    def has_model(self, name: str) -> bool:
        return self.names.resolve(name) is not None

    def check_model(self, name: str) -> None:
        if not self.has_model(name):
            raise UnknownModelError(f"The model `{name}` does not exist or you do not have access to it.")

    def resolve(self, name: str) -> str:
        """The model group ``name`` is served as: an alias's target, else the name (see ``providers.models``)."""
        return self.names.resolve(name) or name

    def deployments_of(self, group: str) -> list[dict[str, Any]]:
        """The deployment entries (``litellm_params``, ``model_info``) serving ``group``."""
        return self._entries(group)

    def _entries(self, group: str) -> list[dict[str, Any]]:
        """The deployments serving ``group`` (an alias, a group or a name a wildcard matches)."""
        group = self.resolve(group)
        found = [e for e in self.model_list if e["model_name"] == group]
        wildcard = None if found else self.names.wildcard(group)
        return [e for e in self.model_list if e["model_name"] == wildcard.model_name] if wildcard else found

    def first_deployment(self, group: str) -> str | None:
        entries = self._entries(group)
        return str(entries[0]["model_info"]["id"]) if entries else None

    def litellm_model(self, group: str) -> str:
        entries = self._entries(group)
        if not entries:
            return group
        model = str(entries[0]["litellm_params"]["model"])
        wildcard = self.names.wildcard(self.resolve(group)) if "*" in model else None
        return (wildcard.concrete(self.resolve(group)) or model) if wildcard else model

    def listed_models(self) -> list[str]:
        return self.names.listed()

    def sim_only(self, name: str) -> bool:
        """True for a group only the offline ``sim`` model serves (it answers chat, not embeddings)."""
        entries = self._entries(name)
        return bool(entries) and all(str(e["litellm_params"]["model"]).startswith(f"{SIM_PROVIDER}/")
                                     for e in entries)

    def supports_embeddings(self, name: str) -> bool:
        return not self.sim_only(name)

    def routed(self, body: dict[str, Any]) -> dict[str, Any]:
        """The body with an alias replaced by its group, so the Router (and its direct path) sees the group."""
        group = self.resolve(body["model"])
        return body if group == body["model"] else {**body, "model": group}

    def served(self, hidden: dict[str, Any] | None, group: str = "") -> Served:
        """Which deployment answered (from a LiteLLM response's ``_hidden_params``) for the requested ``group``."""
        return self._served(hidden, group)

    def _served(self, hidden: dict[str, Any] | None, group: str = "") -> Served:
        hidden = hidden or {}
        deployment_id = hidden.get("model_id")
        entry = self._by_id.get(deployment_id or "")
        model = entry["litellm_params"]["model"] if entry else hidden.get("litellm_model_name")
        if isinstance(model, str) and "*" in model and group:
            model = self.litellm_model(group)  # a wildcard deployment: the concrete model it served
        return Served(deployment=deployment_id, provider=hidden.get("custom_llm_provider"), litellm_model=model)

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
                    rates = litellm_api.cost_per_token(model)
                except Exception:  # unknown price: count as free rather than fail the request
                    rates = (0.0, 0.0)
            self._price_cache[model] = rates
        return rates

    async def complete(self, body: dict[str, Any], headers: dict[str, str] | None = None
                       ) -> tuple[dict[str, Any], Served]:
        self.check_model(body["model"])
        try:
            response = await self.router.acompletion(**_router_kwargs(self.routed(body), headers))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate(exc) from exc
        served = self._served(getattr(response, "_hidden_params", None), body["model"])
        data = clean_completion(response.model_dump())
        usage = data.get("usage") or {}
        served.cost_usd = self.cost(served, body["model"], usage.get("prompt_tokens", 0),
                                    usage.get("completion_tokens", 0))
        return data, served

    async def stream(self, body: dict[str, Any], served: Served, headers: dict[str, str] | None = None
                     ) -> AsyncGenerator[dict[str, Any], None]:
        """Yield cleaned chunks; ``served`` is filled in once the upstream answered. ``headers`` (here and in
        ``complete``, ``embed``) go to the deployment with the request: trace context, request id."""
        self.check_model(body["model"])
        try:
            upstream = await self.router.acompletion(**_router_kwargs(self.routed(body), headers))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate(exc) from exc
        found = self._served(getattr(upstream, "_hidden_params", None), body["model"])
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

    async def embed(self, body: dict[str, Any], headers: dict[str, str] | None = None
                       ) -> tuple[dict[str, Any], Served]:
        self.check_model(body["model"])
        if not self.supports_embeddings(body["model"]):
            raise ProviderBadRequestError(f"model {body['model']} does not support embeddings")
        try:
            response = await self.router.aembedding(**_router_kwargs(self.routed(body), headers))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise translate(exc) from exc
        served = self._served(getattr(response, "_hidden_params", None), body["model"])
        data = response.model_dump()
        out = {"object": "list", "data": [
            {"object": "embedding", "index": d.get("index", i), "embedding": d.get("embedding")}
            for i, d in enumerate(data.get("data") or [])], "model": data.get("model") or body["model"]}
        usage = data.get("usage") or {}
        out["usage"] = {"prompt_tokens": int(usage.get("prompt_tokens") or 0),
                        "total_tokens": int(usage.get("total_tokens") or 0)}
        served.cost_usd = self.cost(served, body["model"], out["usage"]["prompt_tokens"], 0)
        return out, served

    async def respond(self, body: dict[str, Any], headers: dict[str, str] | None = None
                      ) -> tuple[dict[str, Any], Served]:
        return await endpoints.respond(self, body, headers)

    def respond_stream(self, body: dict[str, Any], served: Served, headers: dict[str, str] | None = None
                       ) -> AsyncGenerator[dict[str, Any], None]:
        return endpoints.respond_stream(self, body, served, headers)

    async def complete_text(self, body: dict[str, Any], headers: dict[str, str] | None = None
                            ) -> tuple[dict[str, Any], Served]:
        return await endpoints.complete_text(self, body, headers)

    def complete_text_stream(self, body: dict[str, Any], served: Served, headers: dict[str, str] | None = None
                             ) -> AsyncGenerator[dict[str, Any], None]:
        return endpoints.complete_text_stream(self, body, served, headers)

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

    def deployments(self) -> list[Deployment]:
        return [Deployment(id=str(e["model_info"]["id"]), group=e["model_name"],
                           model=str(e["litellm_params"]["model"])) for e in self.model_list]

    async def cooling_down(self) -> set[str]:
        """Ids of the deployments the Router is cooling down now (it sends them nothing until the cooldown ends)."""
        try:
            return await self.router.cooling_down()
        except Exception:  # a health detail: never fail the health check over it
            return set()

    async def close(self) -> None:
        await self.router.aclose_direct()
        self.router.discard()  # unhook its callbacks from LiteLLM's process-wide lists (at most 100 are kept)
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._unregister_callbacks()

    def _unregister_callbacks(self) -> None:
        """Take this Router's callbacks off LiteLLM's process-wide lists: they are capped at 100 entries, and a
        process that builds many apps (the tests) would otherwise stop registering new Routers' cooldowns."""
        litellm_api.unregister_callbacks(self.router)


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
_CONTROL_FIELDS = litellm_api.ALL_LITELLM_PARAMS | {
    "timeout", "specific_deployment", "fallbacks", "context_window_fallbacks", "content_policy_fallbacks", "priority",
    "model_group_alias", "extra_headers", "extra_body", "extra_query", "base_url", "organization", "api_type",
    "azure_ad_token", "deployment_id", "litellm_params", "deja_body", "deja_headers"}


def client_fields(body: dict[str, Any]) -> dict[str, Any]:
    """The client's request without the fields only the operator may set (see ``_CONTROL_FIELDS``)."""
    return {k: v for k, v in body.items()
            if k in _OPENAI_FIELDS or not (k in _CONTROL_FIELDS or k.startswith(("mock_", "aws_", "vertex_")))}


def _router_kwargs(body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for the Router: the client's fields, plus ``deja_body`` for the direct path and
    ``deja_headers`` for both paths (see ``DejaRouter``). The Router writes its own keys into ``metadata``: it
    gets a copy, so the body sent upstream keeps the client's."""
    clean = client_fields(body)
    kwargs = dict(clean)
    if isinstance(clean.get("metadata"), dict):
        kwargs["metadata"] = dict(clean["metadata"])
    kwargs["deja_body"] = clean
    if headers:
        kwargs["deja_headers"] = dict(headers)
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
