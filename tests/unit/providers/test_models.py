"""Model names as LiteLLM's Router resolves them: groups, aliases (hidden or not), wildcard deployments."""

from __future__ import annotations

import pytest

from providers.models import AliasError, ModelNames


def test_model_names_resolve_as_litellm() -> None:
    names = ModelNames([
        {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o"}},
        {"model_name": "openai/*", "litellm_params": {"model": "openai/*"}},
        {"model_name": "*", "litellm_params": {"model": "anthropic/*"}},
        {"model_name": "llmengine/fo::*::static::*", "litellm_params": {"model": "openai/fo::*::static::*"}},
    ], {"gpt-4": "gpt-4o", "hidden": {"model": "gpt-4o", "hidden": True}})
    assert names.resolve("gpt-4") == "gpt-4o" and names.resolve("gpt-4o") == "gpt-4o"
    assert names.resolve("claude-x") == "claude-x"
    wildcard = names.wildcard("openai/o3")
    assert wildcard is not None and wildcard.concrete("openai/o3") == "openai/o3"
    catch_all = names.wildcard("claude-x")
    assert catch_all is not None and catch_all.concrete("claude-x") == "anthropic/claude-x"
    two = names.wildcard("llmengine/fo::a::static::b")
    assert two is not None and two.concrete("llmengine/fo::a::static::b") == "openai/fo::a::static::b"
    assert names.listed() == ["gpt-4", "gpt-4o"]


def test_an_alias_must_name_a_group() -> None:
    with pytest.raises(AliasError, match="no-such"):
        ModelNames([{"model_name": "a", "litellm_params": {"model": "openai/a"}}], {"b": "no-such"})
    with pytest.raises(AliasError, match="expected a model group name"):
        ModelNames([{"model_name": "a", "litellm_params": {"model": "openai/a"}}], {"b": {"hidden": True}})
