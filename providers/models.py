"""Model names a client may ask for, as LiteLLM's Router resolves them.

- a model group: a deployment's ``model_name``;
- an alias: ``router_settings.model_group_alias`` (``{"gpt-4": "gpt-4o"}`` or ``{"gpt-4": {"model": "gpt-4o",
  "hidden": true}}``; hidden aliases work but are not listed);
- a wildcard: a deployment whose ``model_name`` holds ``*`` (``"*"``, ``"openai/*"``); the requested name fills
  the ``*`` of its ``litellm_params.model`` (``model_name: "*"`` + ``model: openai/*`` serves ``gpt-4o`` as
  ``openai/gpt-4o``).

``resolve`` gives the model group a name is served as: the alias's target for an alias, the name itself for a
group or a wildcard match (each concrete name is its own group: ``gpt-4o`` and ``o3`` through ``*`` share nothing,
not a cache scope either). Unknown names resolve to ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class AliasError(ValueError):
    """A ``model_group_alias`` that points at no model group."""


def _pattern(model_name: str) -> re.Pattern[str]:
    return re.compile("^" + "(.*)".join(re.escape(part) for part in model_name.split("*")) + "$")


@dataclass(frozen=True)
class Wildcard:
    model_name: str
    regex: re.Pattern[str]
    litellm_model: str

    def concrete(self, name: str) -> str | None:
        """The LiteLLM model that serves ``name`` through this wildcard, or None if it does not match."""
        match = self.regex.match(name)
        if match is None:
            return None
        model = self.litellm_model
        segments = match.groups()
        if "*" not in model:
            return model
        if len(segments) > model.count("*"):
            return name  # as LiteLLM: the requested name when the segments do not fit
        for segment in segments:
            model = model.replace("*", segment, 1)
        return model


class ModelNames:
    def __init__(self, model_list: list[dict[str, Any]], model_group_alias: Mapping[str, Any] | None) -> None:
        self.groups: tuple[str, ...] = tuple(sorted({e["model_name"] for e in model_list
                                                     if "*" not in e["model_name"]}))
        wild = [Wildcard(e["model_name"], _pattern(e["model_name"]), str(e["litellm_params"]["model"]))
                for e in model_list if "*" in e["model_name"]]
        # the most specific pattern first (longer, then more wildcards), as LiteLLM's PatternMatchRouter orders them
        self.wildcards: tuple[Wildcard, ...] = tuple(sorted(
            wild, key=lambda w: (len(w.regex.pattern), w.model_name.count("*")), reverse=True))
        self.aliases: dict[str, str] = {}
        self.hidden: set[str] = set()
        for alias, entry in (model_group_alias or {}).items():
            target = entry.get("model") if isinstance(entry, Mapping) else entry
            if not isinstance(target, str) or not target:
                raise AliasError(f"router_settings.model_group_alias.{alias}: expected a model group name")
            if target not in self.groups and self.wildcard(target) is None:
                raise AliasError(f"router_settings.model_group_alias.{alias}: {target!r} is not a model group")
            self.aliases[str(alias)] = target
            if isinstance(entry, Mapping) and entry.get("hidden"):
                self.hidden.add(str(alias))

    def wildcard(self, name: str) -> Wildcard | None:
        return next((w for w in self.wildcards if w.regex.match(name)), None)

    def resolve(self, name: str) -> str | None:
        """The model group ``name`` is served as, or None when nothing serves it."""
        if name in self.groups:
            return name
        if name in self.aliases:
            return self.aliases[name]
        return name if self.wildcard(name) is not None else None

    def listed(self) -> list[str]:
        """What ``/v1/models`` lists: the groups and the visible aliases (never a pattern)."""
        return sorted({*self.groups, *(a for a in self.aliases if a not in self.hidden)})
