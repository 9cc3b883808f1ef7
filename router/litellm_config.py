"""LiteLLM proxy's ``config.yaml`` keys: each one is honoured, ignored with a warning, or refused at start-up.

``check_litellm_config(raw)`` runs on the file as read (after ``environment_variables`` and ``os.environ/``
references). It returns what deja takes from LiteLLM's sections (``translated``: settings for the ``deja:``
section, router settings moved from ``litellm_settings``) and the warnings to log, and raises ``ConfigError``
for a key whose absence would change behaviour (a budget, guardrails, custom auth, a cache setting deja cannot
honour) or that nobody knows (a misspelt key). The README's "LiteLLM config keys" table mirrors these lists.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TOP_LEVEL = frozenset({"model_list", "router_settings", "litellm_settings", "general_settings",
                       "environment_variables", "deja"})

# Top-level sections of LiteLLM features deja does not serve: their endpoints answer 404 (visible), so a warning.
_TOP_WARN = {
    "callback_settings": "LiteLLM's callbacks are not run by deja (it has its own logs and metrics)",
    "assistant_settings": "deja does not serve the Assistants API",
    "finetune_settings": "deja does not serve the fine-tuning API",
    "files_settings": "deja does not serve the Files API",
    "default_vertex_config": "deja does not serve Vertex AI pass-through endpoints",
    "mcp_servers": "deja does not serve MCP", "mcp_tools": "deja does not serve MCP",
    "search_tools": "deja does not serve the search API",
    "vector_store_registry": "deja does not serve vector stores",
    "agents": "deja does not serve agents", "agent_list": "deja does not serve agents",
    "sandbox_tools": "deja does not serve sandbox tools",
}
# Top-level sections whose absence changes what happens to requests deja does serve.
_TOP_REFUSE = {
    "guardrails": "deja runs no guardrails; requests would pass unchecked",
    "policies": "deja runs no guardrail policies", "policy_attachments": "deja runs no guardrail policies",
    "credential_list": "deja does not resolve litellm_credential_name; put the credentials in litellm_params",
    "prompts": "deja does not manage prompts (prompt_id would be ignored)",
    "worker_registry": "deja is not a LiteLLM control plane",
}

# general_settings mapped onto deja's own settings: LiteLLM key → (deja setting path, converter)
_GENERAL_MAPPED = {"database_url", "master_key", "max_request_size_mb", "store_prompts_in_spend_logs",
                   "disable_spend_logs", "maximum_spend_logs_retention_period"}
_GENERAL_WARN = {
    **dict.fromkeys(("alerting", "alert_types", "alert_to_webhook_url", "alerting_args", "alerting_threshold",
                     "spend_report_frequency"), "deja sends no alerts (use its Prometheus metrics)"),
    **dict.fromkeys(("background_health_checks", "health_check_interval", "health_check_concurrency",
                     "health_check_skip_disabled_background_models", "background_health_check_model_groups",
                     "health_check_details", "model_list_healthy_only"),
                    "deja checks deployments on /health/ready only"),
    **dict.fromkeys(("database_connection_pool_limit", "database_connection_timeout", "database_connect_timeout",
                     "database_socket_timeout", "database_extra_connection_params",
                     "database_disable_prepared_statements", "database_args", "proxy_batch_write_at",
                     "use_spend_logs_partitioning", "maximum_spend_logs_cleanup_batch_size",
                     "maximum_spend_logs_cleanup_max_batches", "maximum_spend_logs_cleanup_run_budget",
                     "maximum_spend_logs_cleanup_batch_timeout", "scheduled_job_stagger", "disable_reset_budget",
                     "disable_adding_master_key_hash_to_db", "supported_db_objects"),
                    "deja manages its own database connections and batches"),
    **dict.fromkeys(("ui_access_mode", "enable_public_model_hub", "disable_auto_add_proxy_admin_to_teams",
                     "allow_cli_sso_verification_uri_complete", "ui_username", "ui_password",
                     "user_mcp_management_mode", "store_model_in_db", "proxy_config_reload_interval_seconds",
                     "maximum_autorouter_session_retention_period", "maximum_health_check_retention_period",
                     "mcp_internal_ip_ranges", "mcp_trusted_proxy_ranges", "mcp_xff_num_trusted_hops",
                     "mcp_required_fields", "control_plane_url", "coordination_redis", "infer_model_from_keys",
                     "max_batch_file_size_mb", "max_response_size_mb", "pass_through_request_timeout", "otel",
                     "enable_jwt_auth_ui", "disable_master_key_return"),
                    "a LiteLLM proxy feature (UI, MCP, batches, reloads, tracing) deja does not have"),
    **dict.fromkeys(("alert_type_config", "allow_public_health_readiness_details", "allow_requests_on_db_unavailable",
                     "allow_user_auth", "auto_redirect_ui_login_to_sso", "custom_sso", "custom_ui_sso_sign_in_handler",
                     "database_connection_pool_timeout", "default_team_disabled",
                     "disable_batch_input_file_rate_limiting", "disable_bedrock_agent_runtime_passthrough",
                     "disable_error_logs", "disable_key_generate_for_org_admin", "disable_prisma_schema_update",
                     "disable_spend_updates", "drain_endpoint_token", "enable_drain_endpoint",
                     "enable_health_check_routing", "enable_mcp_registry", "health_check_ignore_transient_errors",
                     "health_check_staleness_threshold", "hide_default_credentials_hint",
                     "maximum_spend_logs_cleanup_cron", "maximum_spend_logs_retention_interval",
                     "mcp_client_side_auth_header_name", "mcp_session_token_signing",
                     "passthrough_managed_object_ids", "require_end_user_mcp_access_defined",
                     "require_key_mcp_access_defined", "search_tools", "skip_batch_input_file_rate_limiting_for_models",
                     "skip_batch_input_file_rate_limiting_for_providers", "team_metadata_schema",
                     "team_metadata_validation_error_message", "team_metadata_validation_timeout",
                     "track_unmanaged_batch_cost", "use_legacy_interactions_schema", "use_redis_transaction_buffer",
                     "use_shared_health_check", "user_api_key_cache_ttl", "disable_responses_id_security",
                     "use_team_public_model_name", "custom_team_metadata_validate", "expose_fallback_errors_to_caller",
                     "image_generation_model", "moderation_model", "disable_retry_on_max_parallel_request_limit_error"),
                    "a LiteLLM proxy feature (UI, SSO, teams, batches, MCP, health checks, spend jobs) deja does not "
                    "have"),
    "cancel_on_disconnect": "deja always cancels the upstream call when the client goes away",
}
_GENERAL_REFUSE = {
    **dict.fromkeys(("custom_auth", "enable_jwt_auth", "litellm_jwtauth", "allowed_routes", "admin_only_routes",
                     "public_routes", "allowed_ips", "key_management_system", "key_management_settings",
                     "use_google_kms", "use_azure_key_vault", "custom_key_generate", "user_header_name",
                     "user_header_mappings", "reject_clientside_metadata_tags", "trusted_proxy_ranges",
                     "custom_auth_run_common_checks", "custom_key_update", "enforce_rbac", "role_permissions",
                     "litellm_key_header_name", "use_x_forwarded_for", "allow_client_side_credentials"),
                    "deja authenticates with its master key and virtual keys only (in Authorization or api-key), "
                    "and never takes credentials from clients"),
    **dict.fromkeys(("max_parallel_requests", "global_max_parallel_requests", "disable_budget_reservation",
                     "apply_user_budget_to_team_keys", "enforce_user_param", "enforce_fallback_model_access",
                     "fail_closed_budget_enforcement", "token_rate_limit_type", "enforced_params"),
                    "deja's limits are per virtual key (rpm, tpm, budget_usd)"),
    **dict.fromkeys(("completion_model", "plugins", "pass_through_endpoints", "forward_client_headers_to_llm_api",
                     "user_url_validation", "user_url_allowed_hosts", "provider_url_destination_allowed_hosts",
                     "database_type", "forward_llm_provider_auth_headers", "forward_openai_org_id",
                     "always_include_stream_usage"),
                    "it changes how requests are routed or forwarded, and deja does not implement it"),
}

# litellm_settings applied to the litellm module as the proxy does (providers.litellm_api.MODULE_SETTINGS)
_LITELLM_APPLIED = frozenset({"drop_params", "modify_params", "request_timeout", "num_retries", "set_verbose"})
# litellm_settings that are router settings in deja (router_settings wins when both are set)
_LITELLM_TO_ROUTER = frozenset({"fallbacks", "context_window_fallbacks", "content_policy_fallbacks",
                                "default_fallbacks", "allowed_fails", "cooldown_time"})
_LITELLM_WARN = {
    **dict.fromkeys(("callbacks", "success_callback", "failure_callback", "service_callback", "input_callback",
                     "audit_log_callbacks", "callback_settings", "langfuse_default_tags", "json_logs",
                     "log_raw_request_response", "turn_off_message_logging", "redact_user_api_key_info",
                     "redact_messages_in_exceptions", "disable_end_user_cost_tracking",
                     "disable_end_user_cost_tracking_prometheus_only", "enable_preview_features", "telemetry",
                     "public_model_groups", "public_model_groups_links", "suppress_debug_info",
                     "return_response_headers", "disable_add_transform_inline_image_block",
                     "global_disable_no_log_param", "store_audit_logs", "enable_redis_auth_cache",
                     "max_ui_session_budget", "scim_admin_group", "scim_upsert_user", "presidio_logging_only",
                     "mcp_aliases", "mcp_semantic_tool_filter", "priority_reservation_settings", "responses",
                     "global_bitbucket_config", "global_gitlab_config", "global_prompt_directory"),
                    "logging, callbacks, UI, MCP and prompt-store settings: deja logs usage rows, JSON log lines and "
                    "metrics itself"),
}
_LITELLM_REFUSE = {
    **dict.fromkeys(("max_budget", "budget_duration", "max_end_user_budget", "max_internal_user_budget",
                     "internal_user_budget_duration", "default_team_settings", "default_key_generate_params",
                     "upperbound_key_generate_params", "key_generation_settings", "default_internal_user_params",
                     "default_max_internal_user_budget", "budget_reset_time"),
                    "deja has no proxy-wide or per-user budget; give each virtual key its budget_usd "
                    "(POST /admin/keys)"),
    "guardrails": "deja runs no guardrails; requests would pass unchecked",
    "post_call_rules": "deja runs no post-call rules; answers would pass unchecked",
    **dict.fromkeys(("cost_discount_config", "cost_margin_config"),
                    "deja prices requests from LiteLLM's bundled table, with no discount or margin"),
    "custom_provider_map": "deja registers no custom providers (only its own sim)",
    "model_group_settings": "deja does not forward client headers to providers",
}
_CACHE_TYPES = {"local": "memory", "redis": "redis"}
_CACHE_PARAMS = frozenset({"type", "ttl", "host", "port", "password", "url", "namespace", "supported_call_types"})
_ROUTER_MOVE = {"health_check_interval", "health_check_concurrency"}
_ROUTER_REFUSE = {"cache_responses": "deja's own cache answers repeated requests; remove it",
                  "caching_groups": "deja's own cache answers repeated requests; remove it",
                  "cache_kwargs": "deja's own cache answers repeated requests; remove it"}
_RETENTION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_DAYS = {"s": 1 / 86400, "m": 1 / 1440, "h": 1 / 24, "d": 1.0, "w": 7.0, "": 1.0}


class ConfigError(ValueError):
    """A LiteLLM key deja refuses; ``router.config`` reports it as its own ``ConfigError``."""


@dataclass
class Translation:
    deja: dict[str, Any] = field(default_factory=dict)  # defaults for the deja: section (deja: wins)
    router: dict[str, Any] = field(default_factory=dict)  # defaults for router_settings
    warnings: list[str] = field(default_factory=list)


def _unknown(section: str, key: str, known: set[str] | frozenset[str]) -> ConfigError:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    where = f"{section}.{key}" if section else key
    return ConfigError(f"{where}: unknown LiteLLM config key{hint}; deja does not know what it should do, "
                       f"so it does not start with it")


def _section(raw: dict[str, Any], name: str) -> dict[str, Any]:
    value = raw.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: must be a mapping, got {type(value).__name__}")
    return value


def _check_top(raw: dict[str, Any], out: Translation) -> None:
    for key in raw:
        if key in TOP_LEVEL:
            continue
        if key in _TOP_REFUSE:
            raise ConfigError(f"{key}: not supported by deja: {_TOP_REFUSE[key]}")
        if key in _TOP_WARN:
            out.warnings.append(f"{key}: ignored: {_TOP_WARN[key]}")
            continue
        raise _unknown("", str(key), TOP_LEVEL | set(_TOP_WARN) | set(_TOP_REFUSE))


def _retention_days(value: Any) -> float:
    match = _RETENTION.match(str(value))
    if match is None:
        raise ConfigError(f"general_settings.maximum_spend_logs_retention_period: expected e.g. '30d' or '12h', "
                          f"got {value!r}")
    return float(match.group(1)) * _UNIT_DAYS[match.group(2)]


def _general(raw: dict[str, Any], out: Translation) -> None:
    general = _section(raw, "general_settings")
    usage: dict[str, Any] = {}
    for key, value in general.items():
        if key in _GENERAL_REFUSE:
            raise ConfigError(f"general_settings.{key}: not supported by deja: {_GENERAL_REFUSE[key]}")
        if key in _GENERAL_WARN:
            out.warnings.append(f"general_settings.{key}: ignored: {_GENERAL_WARN[key]}")
        elif key not in _GENERAL_MAPPED:
            raise _unknown("general_settings", str(key), _GENERAL_MAPPED | set(_GENERAL_WARN) | set(_GENERAL_REFUSE))
        elif value is None:
            continue
        elif key in ("database_url", "master_key"):
            out.deja[key] = str(value)
        elif key == "max_request_size_mb":
            out.deja["max_body_bytes"] = int(float(value) * 1024 * 1024)
        elif key == "store_prompts_in_spend_logs":
            usage["store_messages"] = bool(value)
        elif key == "disable_spend_logs":
            usage["enabled"] = not bool(value)
        else:
            usage["retention_days"] = _retention_days(value)
    if usage:
        out.deja["usage"] = usage


def _redis_url(params: dict[str, Any], env: Mapping[str, str]) -> str:
    """As LiteLLM's proxy: ``cache_params`` first, else ``REDIS_URL`` / ``REDIS_HOST``, ``REDIS_PORT``,
    ``REDIS_PASSWORD`` from the environment (``environment_variables`` included)."""
    if params.get("url") or (not params.get("host") and env.get("REDIS_URL")):
        return str(params.get("url") or env["REDIS_URL"])
    host = params.get("host") or env.get("REDIS_HOST")
    if not host:
        raise ConfigError("litellm_settings.cache_params.host: a redis cache needs a host (cache_params.host, "
                          "REDIS_HOST, or deja.redis_url)")
    password = params.get("password") or env.get("REDIS_PASSWORD")
    auth = f":{password}@" if password else ""
    return f"redis://{auth}{host}:{params.get('port') or env.get('REDIS_PORT') or 6379}/0"


def _cache(litellm_settings: dict[str, Any], out: Translation, env: Mapping[str, str]) -> None:
    enabled = litellm_settings.get("cache")
    params = litellm_settings.get("cache_params") or {}
    if not isinstance(params, dict):
        raise ConfigError("litellm_settings.cache_params: must be a mapping")
    if enabled is None and not params:
        return
    if enabled is False or enabled is None:
        out.deja["cache"] = {"enabled": False}
        return
    if enabled is not True:
        raise ConfigError(f"litellm_settings.cache: expected true or false, got {enabled!r}")
    for key in params:
        if key not in _CACHE_PARAMS:
            raise ConfigError(f"litellm_settings.cache_params.{key}: deja cannot honour it (its cache takes type "
                              f"local or redis, ttl, host, port, password, namespace)")
    cache_type = params.get("type", "redis")  # LiteLLM's proxy default
    if cache_type not in _CACHE_TYPES:
        raise ConfigError(f"litellm_settings.cache_params.type: {cache_type!r} is not supported: deja's cache is "
                          f"'local' (memory) or 'redis', and it is semantic by itself")
    cache: dict[str, Any] = {"enabled": True, "backend": _CACHE_TYPES[cache_type]}
    if params.get("ttl") is not None:
        cache["ttl_seconds"] = float(params["ttl"])
    if params.get("supported_call_types"):
        out.warnings.append("litellm_settings.cache_params.supported_call_types: ignored: deja caches chat, "
                            "responses and completions (never embeddings)")
    if params.get("namespace"):
        out.warnings.append("litellm_settings.cache_params.namespace: deja's Redis keys use deja.redis_prefix "
                            "(entries are already separated by tenant and by X-Deja-Cache-Namespace)")
    if cache_type == "redis":
        out.deja["redis_url"] = _redis_url(params, env)
    out.deja["cache"] = cache


def _litellm(raw: dict[str, Any], out: Translation, env: Mapping[str, str]) -> dict[str, Any]:
    """Check litellm_settings; return the keys the Gateway applies to the litellm module."""
    settings = _section(raw, "litellm_settings")
    if not settings:
        return {}
    from providers import litellm_api  # LiteLLM is imported only when a config has litellm_settings

    applied: dict[str, Any] = {}
    for key, value in settings.items():
        if key in ("cache", "cache_params"):
            continue
        if key in _LITELLM_REFUSE:
            raise ConfigError(f"litellm_settings.{key}: not supported by deja: {_LITELLM_REFUSE[key]}")
        if key in _LITELLM_APPLIED:
            applied[key] = value
        elif key in _LITELLM_TO_ROUTER:
            out.router[key] = value
        elif key in _LITELLM_WARN:
            out.warnings.append(f"litellm_settings.{key}: ignored: {_LITELLM_WARN[key]}")
        elif litellm_api.is_module_setting(str(key)):
            out.warnings.append(f"litellm_settings.{key}: ignored: deja applies only "
                                f"{', '.join(sorted(_LITELLM_APPLIED))} to LiteLLM")
        else:
            raise _unknown("litellm_settings", str(key),
                           _LITELLM_APPLIED | _LITELLM_TO_ROUTER | set(_LITELLM_WARN) | set(_LITELLM_REFUSE))
    _cache(settings, out, env)
    return applied


def _router(raw: dict[str, Any]) -> None:
    section = _section(raw, "router_settings")
    if not section:
        return
    from providers import litellm_api

    valid = litellm_api.router_arguments()
    for key in section:
        if key in _ROUTER_MOVE:
            raise ConfigError(f"router_settings.{key}: not a router setting; LiteLLM takes it in general_settings")
        if key in _ROUTER_REFUSE:
            raise ConfigError(f"router_settings.{key}: {_ROUTER_REFUSE[key]}")
        if key not in valid:
            raise _unknown("router_settings", str(key), valid)


def check_litellm_config(raw: dict[str, Any], env: Mapping[str, str]) -> tuple[Translation, dict[str, Any]]:
    """Check every LiteLLM key of ``raw``; return the translation and the litellm module settings to apply."""
    out = Translation()
    _check_top(raw, out)
    _general(raw, out)
    applied = _litellm(raw, out, env)
    _router(raw)
    return out, applied
