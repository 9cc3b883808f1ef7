"""Configuration: LiteLLM's config.yaml works unchanged; bad fields are named; env overrides apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.config import ConfigError, load_settings

LITELLM_CONFIG = """
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: azure/gpt-4o-eu
      api_base: https://example-eu.openai.azure.com/
      api_key: os.environ/AZURE_API_KEY_EU
      api_version: "2024-06-01"
      rpm: 6
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/OPENAI_API_KEY
  - model_name: claude
    litellm_params:
      model: anthropic/claude-3-5-sonnet-20241022
      api_key: os.environ/ANTHROPIC_API_KEY
router_settings:
  routing_strategy: simple-shuffle
  num_retries: 2
  fallbacks: [{"gpt-4o": ["claude"]}]
  cooldown_time: 30
litellm_settings:
  drop_params: true
general_settings:
  master_key: sk-1234
"""

ENV = {"AZURE_API_KEY_EU": "az", "OPENAI_API_KEY": "oa", "ANTHROPIC_API_KEY": "an"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_litellm_proxy_config_loads_unchanged(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, LITELLM_CONFIG), environ=ENV)
    assert [m.model_name for m in settings.model_list] == ["gpt-4o", "gpt-4o", "claude"]
    assert settings.model_list[0].litellm_params["api_key"] == "az"
    assert settings.router_settings["fallbacks"] == [{"gpt-4o": ["claude"]}]
    assert settings.effective_master_key == "sk-1234"


def test_missing_environment_variable_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AZURE_API_KEY_EU"):
        load_settings(write(tmp_path, LITELLM_CONFIG), environ={})


def test_invalid_field_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"deja\.cache\.ttl_seconds"):
        load_settings(write(tmp_path, "deja:\n  cache:\n    ttl_seconds: -5\n"), environ={})
    with pytest.raises(ConfigError, match=r"deja\.no_such_setting"):
        load_settings(write(tmp_path, "deja:\n  no_such_setting: 1\n"), environ={})
    with pytest.raises(ConfigError, match=r"model_list\.0\.litellm_params"):
        load_settings(write(tmp_path, "model_list:\n  - model_name: x\n    litellm_params: {}\n"), environ={})


def test_environment_overrides(tmp_path: Path) -> None:
    settings = load_settings(None, environ={"DEJA_PORT": "9001", "DEJA_CACHE__BACKEND": "redis",
                                            "DEJA_MASTER_KEY": "sk-master"})
    assert settings.deja.port == 9001 and settings.deja.cache.backend == "redis"
    assert settings.effective_master_key == "sk-master"
    with pytest.raises(ConfigError, match=r"deja\.port"):
        load_settings(None, environ={"DEJA_PORT": "not-a-port"})


def test_defaults_are_embedded() -> None:
    settings = load_settings(None, environ={})
    assert settings.model_list == [] and settings.deja.redis_url is None
    assert settings.deja.database_url.startswith("sqlite:///")
    assert settings.deja.host == "127.0.0.1" and settings.deja.port == 8080


def test_environment_values_keep_strings() -> None:
    settings = load_settings(None, environ={"DEJA_REDIS_PREFIX": "tenant:a:", "DEJA_MASTER_KEY": "123",
                                            "DEJA_COMPRESSION__PER_MODEL": "{gpt-4o: auto}"})
    assert settings.deja.redis_prefix == "tenant:a:"
    assert settings.deja.master_key == "123"
    assert settings.deja.compression.per_model == {"gpt-4o": "auto"}


def test_limit_defaults_and_tenant_budgets() -> None:
    from router.config import load_settings

    settings = load_settings(environ={"DEJA_LIMITS__DEFAULT_RPM": "100", "DEJA_LIMITS__DEFAULT_BUDGET": "2.5",
                                      "DEJA_LIMITS__DEFAULT_BUDGET_PERIOD": "7d"},
                             overrides={"limits": {"tenant_budgets": {"acme": {"budget_usd": 50,
                                                                               "budget_period": "monthly"}}}})
    limits = settings.deja.limits
    assert (limits.default_rpm, limits.default_tpm, limits.default_budget) == (100, None, 2.5)
    assert limits.default_budget_period == "7d"
    assert limits.tenant_budgets["acme"].budget_usd == 50.0
    for bad in ({"default_rpm": 0}, {"default_budget_period": "weekly"}, {"tenant_budgets": {"a": {}}}):
        with pytest.raises(ConfigError, match="deja.limits"):
            load_settings(environ={}, overrides={"limits": bad})
