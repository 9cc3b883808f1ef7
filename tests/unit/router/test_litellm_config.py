"""LiteLLM proxy configs, written the way LiteLLM's documentation writes them: each key is honoured, ignored with a
warning that names it, or refused at start-up with an error that names it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from router.config import ConfigError, Settings, load_settings

# The proxy docs' "quick start" config with caching, a database, alerting and router settings
DOCS_CONFIG = """
model_list:
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: azure/gpt-turbo-small-eu
      api_base: https://my-endpoint-europe-berri-992.openai.azure.com/
      api_key: os.environ/AZURE_API_KEY_EU
      rpm: 6
  - model_name: gpt-3.5-turbo
    litellm_params:
      model: openai/gpt-3.5-turbo
      api_key: os.environ/OPENAI_API_KEY
  - model_name: "*"
    litellm_params:
      model: "openai/*"
      api_key: os.environ/OPENAI_API_KEY

litellm_settings:
  drop_params: True
  success_callback: ["langfuse"]
  cache: True
  cache_params:
    type: redis
    host: os.environ/REDIS_HOST
    port: os.environ/REDIS_PORT
    password: os.environ/REDIS_PASSWORD
    ttl: 600

general_settings:
  master_key: sk-1234
  database_url: "postgresql://llmproxy:dbpassword9090@db:5432/litellm"
  alerting: ["slack"]

router_settings:
  routing_strategy: simple-shuffle
  num_retries: 2
  timeout: 30
  model_group_alias: {"gpt-4": "gpt-3.5-turbo"}

environment_variables:
  REDIS_HOST: localhost
  REDIS_PORT: "6380"
  REDIS_PASSWORD: os.environ/SECRET_REDIS_PASSWORD
  AZURE_API_KEY_EU: az-key
"""


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_settings(path, environ=environ if environ is not None else {"OPENAI_API_KEY": "oa"})


def test_docs_config_is_honoured(tmp_path: Path) -> None:
    settings = load(tmp_path, DOCS_CONFIG, {"OPENAI_API_KEY": "oa", "SECRET_REDIS_PASSWORD": "pw"})
    # environment_variables are applied before os.environ/ references are resolved, and may reference the env
    assert settings.environment_variables["REDIS_HOST"] == "localhost"
    assert settings.environment_variables["REDIS_PASSWORD"] == "pw"
    assert settings.model_list[0].litellm_params["api_key"] == "az-key"
    # general_settings: the database and the master key
    assert settings.deja.database_url == "postgresql://llmproxy:dbpassword9090@db:5432/litellm"
    assert settings.effective_master_key == "sk-1234" and settings.deja.master_key == "sk-1234"
    # litellm_settings.cache: deja's cache, on Redis, with LiteLLM's ttl
    assert settings.deja.cache.enabled and settings.deja.cache.backend == "redis"
    assert settings.deja.cache.ttl_seconds == 600
    assert settings.deja.redis_url == "redis://:pw@localhost:6380/0"
    assert settings.router_settings["model_group_alias"] == {"gpt-4": "gpt-3.5-turbo"}
    # what deja ignores is named in a warning
    assert any(w.startswith("litellm_settings.success_callback: ignored") for w in settings.config_warnings)
    assert any(w.startswith("general_settings.alerting: ignored") for w in settings.config_warnings)


def test_environment_variables_reach_the_process_environment(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPAT_TEST_PROVIDER_KEY", "placeholder")  # restored (unset) after the test
    monkeypatch.setenv("PATH", os.environ["PATH"])
    path = tmp_path / "config.yaml"
    path.write_text("environment_variables:\n  COMPAT_TEST_PROVIDER_KEY: sk-from-config\n  PATH: /nowhere\n"
                    "model_list:\n  - model_name: m\n    litellm_params: {model: openai/m, "
                    "api_key: os.environ/COMPAT_TEST_PROVIDER_KEY}\n")
    settings = load_settings(path)
    assert os.environ["COMPAT_TEST_PROVIDER_KEY"] == "sk-from-config"
    assert settings.model_list[0].litellm_params["api_key"] == "sk-from-config"
    assert os.environ["PATH"] != "/nowhere"  # as in LiteLLM: never from a config file
    assert any("environment_variables.PATH" in w for w in settings.config_warnings)


def test_deja_section_wins_over_general_settings_and_says_so(tmp_path: Path) -> None:
    settings = load(tmp_path, "general_settings:\n  database_url: postgresql://a@b/c\n"
                              "deja:\n  database_url: sqlite:///x.db\n")
    assert settings.deja.database_url == "sqlite:///x.db"
    assert any(w.startswith("database_url: deja.database_url is used") for w in settings.config_warnings)


def test_general_settings_mapped_onto_usage_and_body_size(tmp_path: Path) -> None:
    settings = load(tmp_path, "general_settings:\n  max_request_size_mb: 2\n  store_prompts_in_spend_logs: false\n"
                              "  maximum_spend_logs_retention_period: 12h\n")
    assert settings.deja.max_body_bytes == 2 * 1024 * 1024
    assert settings.deja.usage.store_messages is False
    assert settings.deja.usage.retention_days == pytest.approx(0.5)
    assert load(tmp_path, "general_settings:\n  disable_spend_logs: true\n").deja.usage.enabled is False


def test_cache_true_reads_redis_from_the_environment_as_litellm(tmp_path: Path) -> None:
    """``cache: true`` alone is LiteLLM's Redis cache on REDIS_HOST / REDIS_PORT / REDIS_PASSWORD, which
    ``environment_variables`` may set."""
    text = ("environment_variables:\n  REDIS_HOST: cache.internal\n  REDIS_PORT: '6390'\n"
            "litellm_settings:\n  cache: true\n")
    settings = load(tmp_path, text, {"REDIS_PASSWORD": "s3cret"})
    assert settings.deja.redis_url == "redis://:s3cret@cache.internal:6390/0"
    assert settings.deja.cache.backend == "redis"
    with pytest.raises(ConfigError, match="REDIS_HOST"):
        load(tmp_path, "litellm_settings:\n  cache: true\n", {})
    assert load(tmp_path, "litellm_settings:\n  cache: true\n", {"REDIS_URL": "redis://r:1/2"}).deja.redis_url == \
        "redis://r:1/2"


def test_cache_false_and_local(tmp_path: Path) -> None:
    assert load(tmp_path, "litellm_settings:\n  cache: false\n").deja.cache.enabled is False
    local = load(tmp_path, "litellm_settings:\n  cache: true\n  cache_params: {type: local, ttl: 60}\n").deja.cache
    assert local.enabled and local.backend == "memory" and local.ttl_seconds == 60


@pytest.mark.parametrize(("text", "named"), [
    ("litellm_settings:\n  max_budget: 100\n  budget_duration: 30d\n", "litellm_settings.max_budget"),
    ("litellm_settings:\n  cache: true\n  cache_params: {type: redis-semantic, host: h, "
     "similarity_threshold: 0.8}\n", "litellm_settings.cache_params"),
    ("litellm_settings:\n  cache: true\n  cache_params: {type: s3, s3_bucket_name: b}\n",
     "litellm_settings.cache_params"),
    ("litellm_settings:\n  cache: true\n  cache_params: {type: local, mode: default_off}\n",
     "litellm_settings.cache_params.mode"),
    ("litellm_settings:\n  drop_parms: true\n", "drop_params"),  # misspelt: the error suggests the right key
    ("general_settings:\n  custom_auth: custom_auth.user_api_key_auth\n", "general_settings.custom_auth"),
    ("general_settings:\n  max_parallel_requests: 10\n", "general_settings.max_parallel_requests"),
    ("general_settings:\n  master_kye: sk-1\n", "master_key"),
    ("modle_list: []\n", "model_list"),
    ("guardrails:\n  - guardrail_name: g\n    litellm_params: {guardrail: aporia, mode: pre_call}\n", "guardrails"),
    ("router_settings:\n  health_check_interval: 300\n", "router_settings.health_check_interval"),
    ("router_settings:\n  num_retires: 3\n", "num_retries"),
    ("router_settings:\n  cache_responses: true\n", "router_settings.cache_responses"),
    ("litellm_settings:\n  cost_margin_config: {openai: 0.1}\n", "litellm_settings.cost_margin_config"),
    ("general_settings:\n  allow_client_side_credentials: true\n", "general_settings.allow_client_side_credentials"),
])
def test_keys_deja_cannot_honour_stop_start_up(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load(tmp_path, text)


def test_harmless_keys_warn(tmp_path: Path) -> None:
    settings = load(tmp_path, "callback_settings:\n  otel: {message_logging: false}\n"
                              "litellm_settings:\n  callbacks: [prometheus]\n  ssl_verify: false\n"
                              "general_settings:\n  background_health_checks: true\n  store_model_in_db: true\n")
    warned = {w.split(":")[0] for w in settings.config_warnings}
    assert warned == {"callback_settings", "litellm_settings.callbacks", "litellm_settings.ssl_verify",
                      "general_settings.background_health_checks", "general_settings.store_model_in_db"}


def test_litellm_settings_fallbacks_become_router_settings(tmp_path: Path) -> None:
    settings = load(tmp_path, "litellm_settings:\n  fallbacks: [{a: [b]}]\n  context_window_fallbacks: [{a: [c]}]\n"
                              "router_settings:\n  fallbacks: [{a: [d]}]\n")
    assert settings.router_settings["fallbacks"] == [{"a": ["d"]}]  # router_settings wins
    assert settings.router_settings["context_window_fallbacks"] == [{"a": ["c"]}]


def test_include_appends_other_files_as_litellm(tmp_path: Path) -> None:
    (tmp_path / "models.yaml").write_text("model_list:\n  - model_name: b\n    litellm_params: {model: openai/b}\n"
                                          "router_settings:\n  num_retries: 5\n")
    settings = load(tmp_path, "include:\n  - models.yaml\nmodel_list:\n  - model_name: a\n"
                              "    litellm_params: {model: openai/a}\n")
    assert [m.model_name for m in settings.model_list] == ["a", "b"]
    assert settings.router_settings["num_retries"] == 5
    with pytest.raises(ConfigError, match="include: cannot read"):
        load(tmp_path, "include:\n  - missing.yaml\n")


def test_general_settings_keys_the_proxy_reads_are_all_classified(tmp_path: Path) -> None:
    """Each general_settings key LiteLLM's proxy model documents is honoured, warned about or refused by name,
    never reported as unknown."""
    from litellm.proxy._types import ConfigGeneralSettings

    for key in ConfigGeneralSettings.model_fields:
        try:
            settings = load(tmp_path, f"general_settings:\n  {key}: null\n")
        except ConfigError as exc:
            assert f"general_settings.{key}: not supported by deja" in str(exc)
        else:
            assert all("unknown" not in w for w in settings.config_warnings)


def test_the_applied_module_settings_are_the_gateways() -> None:
    from providers import litellm_api
    from router import litellm_config

    assert litellm_config._LITELLM_APPLIED == litellm_api.MODULE_SETTINGS
