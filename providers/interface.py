"""What the request pipeline needs of a provider: the ``Provider`` protocol and the ``Served`` record.

``providers.gateway.Gateway`` (LiteLLM's Router) implements it; tests implement it in-process
(``tests/fakes.py``) to exercise the pipeline without HTTP. Failures are raised as ``providers.errors``'s
``ProviderError`` tree, never as LiteLLM's or aiohttp's own exceptions.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class Served:
    """Which deployment answered, and at what price (filled in as a call completes)."""

    deployment: str | None = None
    provider: str | None = None
    litellm_model: str | None = None
    cost_usd: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Provider(Protocol):
    """Model groups and the calls to them. Bodies in and out are OpenAI's JSON, as dicts."""

    @property
    def groups(self) -> Sequence[str]:
        """The model groups a client may name, sorted."""
        ...

    def has_model(self, name: str) -> bool:
        """A group, an alias (``model_group_alias``) or a name a wildcard deployment serves."""
        ...

    def resolve(self, name: str) -> str:
        """The model group ``name`` is served as: an alias's target, else ``name`` itself. Its cache scope."""
        ...

    def listed_models(self) -> Sequence[str]:
        """What ``/v1/models`` lists: the groups and the visible aliases (never a wildcard pattern), sorted."""
        ...

    def supports_embeddings(self, name: str) -> bool: ...

    def check_model(self, name: str) -> None:
        """Raise ``UnknownModelError`` for a model group that does not exist."""
        ...

    def first_deployment(self, group: str) -> str | None:
        """The deployment a failure is attributed to when the provider could not say which one failed."""
        ...

    def cost(self, served: Served, group: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for these tokens on the deployment that served (or, unknown, the group's first deployment)."""
        ...

    async def complete(self, body: dict[str, Any], headers: dict[str, str] | None = None
                       ) -> tuple[dict[str, Any], Served]:
        """``headers`` (here, in ``stream`` and ``embed``) go to the deployment: trace context, request id."""
        ...

    def stream(self, body: dict[str, Any], served: Served, headers: dict[str, str] | None = None
               ) -> AsyncGenerator[dict[str, Any], None]:
        """Chunks as dicts; ``served`` is filled in once the upstream answered. Closing the iterator (``aclose``)
        drops the upstream connection."""
        ...

    async def embed(self, body: dict[str, Any], headers: dict[str, str] | None = None
                    ) -> tuple[dict[str, Any], Served]: ...

    async def respond(self, body: dict[str, Any], headers: dict[str, str] | None = None
                      ) -> tuple[dict[str, Any], Served]:
        """The Responses API (``POST /v1/responses``): a ``response`` object."""
        ...

    def respond_stream(self, body: dict[str, Any], served: Served, headers: dict[str, str] | None = None
                       ) -> AsyncGenerator[dict[str, Any], None]:
        """The Responses API's events (each a dict with its ``type``), as ``stream``."""
        ...

    async def complete_text(self, body: dict[str, Any], headers: dict[str, str] | None = None
                            ) -> tuple[dict[str, Any], Served]:
        """The legacy Completions API (``POST /v1/completions``): a ``text_completion``."""
        ...

    def complete_text_stream(self, body: dict[str, Any], served: Served, headers: dict[str, str] | None = None
                             ) -> AsyncGenerator[dict[str, Any], None]:
        """``text_completion`` chunks; the usage, when known, last, on a chunk with no choice."""
        ...

    async def ping(self) -> dict[str, bool]:
        """Reachability per deployment."""
        ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class Deployment:
    """One deployment of a model group, as health reports name it (no credentials)."""

    id: str
    group: str
    model: str


@runtime_checkable
class DeploymentInventory(Protocol):
    """What a provider with several deployments can tell health checks and dashboards (optional)."""

    def deployments(self) -> list[Deployment]: ...

    async def cooling_down(self) -> set[str]:
        """Ids of the deployments that get no traffic now (cooling down after failures)."""
        ...
