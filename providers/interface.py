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

    def has_model(self, name: str) -> bool: ...

    def check_model(self, name: str) -> None:
        """Raise ``UnknownModelError`` for a model group that does not exist."""
        ...

    def first_deployment(self, group: str) -> str | None:
        """The deployment a failure is attributed to when the provider could not say which one failed."""
        ...

    def cost(self, served: Served, group: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for these tokens on the deployment that served (or, unknown, the group's first deployment)."""
        ...

    async def complete(self, body: dict[str, Any]) -> tuple[dict[str, Any], Served]: ...

    def stream(self, body: dict[str, Any], served: Served) -> AsyncGenerator[dict[str, Any], None]:
        """Chunks as dicts; ``served`` is filled in once the upstream answered. Closing the iterator (``aclose``)
        drops the upstream connection."""
        ...

    async def embed(self, body: dict[str, Any]) -> tuple[dict[str, Any], Served]: ...

    async def ping(self) -> dict[str, bool]:
        """Reachability per deployment."""
        ...

    async def close(self) -> None: ...
