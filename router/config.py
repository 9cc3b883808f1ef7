"""deja's settings: one frozen, typed object built from a YAML file plus ``DEJA_*`` environment variables.

The YAML file is LiteLLM proxy's ``config.yaml`` format (``model_list``, ``router_settings``,
``litellm_settings``, ``general_settings``, ``environment_variables``), plus a ``deja:`` section for deja's own
settings. ``environment_variables`` are applied first (to ``os.environ`` when deja reads the real environment), then
any string value ``os.environ/NAME`` is replaced by that environment variable. Every LiteLLM key is honoured,
ignored with a warning (``Settings.config_warnings``) or refused (see ``router/litellm_config.py``).
``DEJA_*`` environment variables override the ``deja:`` section: ``DEJA_PORT=9000``, ``DEJA_MASTER_KEY=...``,
nested with a double underscore: ``DEJA_CACHE__BACKEND=redis``.
Invalid configuration raises ``ConfigError`` naming the bad field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from router import litellm_config


class ConfigError(Exception):
    """Configuration that deja cannot start with; the message names the field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, coerce_numbers_to_str=True)


class SimSettings(_Section):
    delay_ms: float = Field(300.0, ge=0)
    word_delay_ms: float = Field(15.0, ge=0)


class CacheSettings(_Section):
    enabled: bool = True
    backend: Literal["auto", "memory", "redis"] = "auto"  # auto: redis when redis_url is set
    ttl_seconds: float = Field(86400.0, gt=0)
    capacity: int = Field(100_000, gt=0)
    semantic: bool = True
    threshold: float | None = Field(None, ge=-1.0, le=1.0)  # None: the calibrated default
    max_semantic_temperature: float = Field(1.0, ge=0)
    embedding_model: str | None = None  # a sentence-transformers path; None: bundled all-MiniLM-L6-v2
    embedding_backend: Literal["auto", "torch", "onnx", "onnx-fp32", "onnx-int8"] = "auto"  # auto: ONNX int8
    embedding_threads: int | None = Field(None, ge=1)
    gate: bool = True  # the semantic tier's cheap first stage (static embeddings); off: transformer only
    gate_threshold: float | None = Field(None, ge=-1.0, le=1.0)  # None: the calibrated default (0.85)
    max_query_chars: int = Field(4000, ge=1)  # longer last user messages skip the semantic tier


class CompressionSettings(_Section):
    default: Literal["off", "lossless", "auto"] = "lossless"
    per_model: dict[str, Literal["off", "lossless", "auto"]] = Field(default_factory=dict)
    auto_min_tokens: int = Field(2000, ge=0)
    auto_ratio: float = Field(4.0, ge=1.0)
    auto_scorer: Literal["lexical", "embedding"] = "lexical"


BudgetPeriod = Literal["1h", "1d", "7d", "30d", "daily", "monthly"]


class TenantBudget(_Section):
    budget_usd: float = Field(ge=0)
    budget_period: BudgetPeriod | None = None  # None: lifetime


class LimitsSettings(_Section):
    backend: Literal["auto", "memory", "redis"] = "auto"
    failure_mode: Literal["closed", "open"] = "closed"
    default_max_tokens: int = Field(1024, ge=0)  # completion estimate when a request sets no max_tokens
    default_rpm: int | None = Field(None, ge=1)  # for virtual keys without their own rpm
    default_tpm: int | None = Field(None, ge=1)
    default_budget: float | None = Field(None, ge=0)  # USD, for virtual keys without their own budget
    default_budget_period: BudgetPeriod | None = None
    tenant_budgets: dict[str, TenantBudget] = Field(default_factory=dict)  # one budget per tenant (team)


class UsageSettings(_Section):
    enabled: bool = True
    store_messages: bool = True
    max_body_bytes: int = Field(32_768, ge=0)
    batch_size: int = Field(500, gt=0)
    flush_interval: float = Field(1.0, gt=0)
    queue_max: int = Field(10_000, gt=0)
    spill_path: str | None = None  # default: <database dir>/usage-spill.jsonl
    retention_days: float | None = Field(None, gt=0)


class MetricsSettings(_Section):
    enabled: bool = True
    require_master_key: bool = False
    max_tenants: int = Field(50, ge=0)  # tenant label values on cost and token counters; later ones are "other"
    tag_labels: list[str] = Field(default_factory=list)  # tags counted in deja_tag_cost_usd_total (allow-list)


class CorsSettings(_Section):
    allow_origins: list[str] = Field(default_factory=list)  # exact origins or patterns ("https://*.example.com", "*")
    allow_credentials: bool = False
    max_age: int = Field(600, ge=0)  # seconds a browser may cache a preflight answer


class DejaSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    master_key: str | None = None
    allow_open_bind: bool = False  # bind beyond loopback without a master key
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    # bytes of large (> 64 KB) request bodies worked on at once; more wait (router/http/inflight.py); 0: off
    inflight_body_bytes: int = Field(16 * 1024 * 1024, ge=0)
    redis_url: str | None = None
    redis_prefix: str = "deja:"
    database_url: str = "sqlite:///.deja/deja.db"
    database_schema: str | None = None  # PostgreSQL schema (created if missing); default: the search_path
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "text"] = "auto"
    log_prompts: bool = False
    keepalive_seconds: float = Field(15.0, gt=0)
    key_cache_ttl: float = Field(1.0, ge=0)
    event_loop: Literal["uvloop", "asyncio"] = "uvloop"
    direct_openai: bool = True  # OpenAI-compatible groups skip litellm.acompletion (providers/direct.py)
    sim: SimSettings = SimSettings()
    cache: CacheSettings = CacheSettings()
    compression: CompressionSettings = CompressionSettings()
    limits: LimitsSettings = LimitsSettings()
    usage: UsageSettings = UsageSettings()
    metrics: MetricsSettings = MetricsSettings()
    cors: CorsSettings = CorsSettings()


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    model_name: str
    litellm_params: dict[str, Any]
    model_info: dict[str, Any] = Field(default_factory=dict)

    @field_validator("litellm_params")
    @classmethod
    def _needs_model(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not isinstance(value.get("model"), str) or not value["model"]:
            raise ValueError("litellm_params.model is required")
        return value


class Settings(BaseModel):
    """Everything deja reads at start-up. Frozen: build a new one to change it."""

    model_config = ConfigDict(extra="allow", frozen=True)
    model_list: list[ModelEntry] = Field(default_factory=list)
    router_settings: dict[str, Any] = Field(default_factory=dict)
    litellm_settings: dict[str, Any] = Field(default_factory=dict)
    general_settings: dict[str, Any] = Field(default_factory=dict)
    environment_variables: dict[str, str] = Field(default_factory=dict)
    deja: DejaSettings = DejaSettings()
    config_warnings: tuple[str, ...] = ()  # LiteLLM keys deja ignores, to log at start-up

    @property
    def effective_master_key(self) -> str | None:
        return self.deja.master_key or self.general_settings.get("master_key")


def _resolve_env(value: Any, env: Mapping[str, str], path: str = "") -> Any:
    if isinstance(value, str) and value.startswith("os.environ/"):
        name = value.removeprefix("os.environ/")
        if name not in env:
            raise ConfigError(f"{path or 'value'}: environment variable {name} is not set")
        return env[name]
    if isinstance(value, dict):
        return {k: _resolve_env(v, env, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_env(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


_NOT_SETTINGS = {"DEJA_CONFIG", "DEJA_CACHE_DIR"}  # the config file's path; where exported models are cached


def _env_value(raw: str) -> Any:
    """``true``, ``42``, ``0.5`` and ``[a, b]`` / ``{k: v}`` are typed; anything else stays the string it is."""
    if raw == "":
        return None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, dict | list) and not raw.lstrip().startswith(("[", "{")):
        return raw
    return value if isinstance(value, bool | int | float | dict | list) else raw


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith("DEJA_") or name in _NOT_SETTINGS:
            continue
        parts = name.removeprefix("DEJA_").lower().split("__")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _env_value(raw)
    return out


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "config"
        lines.append(f"{where}: {item['msg']}")
    return "invalid configuration: " + "; ".join(lines)


# Never taken from a config file's environment_variables (as LiteLLM's proxy refuses them)
_BLOCKED_ENV = frozenset({"PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "DYLD_LIBRARY_PATH", "DYLD_INSERT_LIBRARIES",
                          "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONINSPECT", "PYTHONUSERBASE"})


def _environment_variables(raw: dict[str, Any], env: Mapping[str, str], warnings: list[str]) -> dict[str, str]:
    """LiteLLM's top-level ``environment_variables``, resolved (a value may itself be ``os.environ/NAME``)."""
    section = raw.get("environment_variables") or {}
    if not isinstance(section, dict):
        raise ConfigError("environment_variables: must be a mapping of NAME: value")
    out: dict[str, str] = {}
    for name, value in section.items():
        if name in _BLOCKED_ENV:
            warnings.append(f"environment_variables.{name}: not applied (deja never sets it from a config file)")
            continue
        if value is None:
            continue
        out[str(name)] = str(_resolve_env(value, env, f"environment_variables.{name}"))
    return out


def _translated(raw: dict[str, Any], deja: dict[str, Any],
                env: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Check the LiteLLM keys; fold what they mean into ``raw`` (``deja:`` and ``router_settings`` win)."""
    try:
        translation, _ = litellm_config.check_litellm_config(raw, env)
    except litellm_config.ConfigError as exc:
        raise ConfigError(str(exc)) from exc
    warnings = list(translation.warnings)
    for key, value in translation.deja.items():
        if key in deja and not isinstance(value, dict) and deja[key] != value:
            warnings.append(f"{key}: deja.{key} is used; the LiteLLM setting that gives it another value is not")
    raw["deja"] = _merge(translation.deja, deja)
    router = raw.get("router_settings") or {}
    raw["router_settings"] = {**translation.router, **router}
    return raw, warnings


def _includes(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """LiteLLM's ``include: [file.yaml, ...]`` (paths relative to the config file): each file's lists extend the
    config's, its other keys replace them."""
    files = raw.pop("include", None)
    if files is None:
        return raw
    if not isinstance(files, list):
        raise ConfigError("include: must be a list of file paths")
    for name in files:
        path = base / str(name)
        try:
            included = yaml.safe_load(path.read_text()) or {}
        except OSError as exc:
            raise ConfigError(f"include: cannot read {path}: {exc.strerror}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"include: {path} is not valid YAML: {exc}") from exc
        if not isinstance(included, dict):
            raise ConfigError(f"include: {path}: the top level must be a mapping")
        for key, value in included.items():
            if isinstance(value, list) and isinstance(raw.get(key), list):
                raw[key] = [*raw[key], *value]
            else:
                raw[key] = value
    return raw


def load_settings(
    path: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Read the YAML file (if any), apply ``DEJA_*`` variables, then ``overrides`` (for the ``deja:`` section)."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path}: the top level must be a mapping")
        raw = _includes(loaded, Path(path).parent)
    warnings: list[str] = []
    variables = _environment_variables(raw, env, warnings)
    if variables:
        if environ is None:
            os.environ.update(variables)  # LiteLLM's providers read their keys from the process environment
        env = {**env, **variables}
    raw = _resolve_env({k: v for k, v in raw.items() if k != "environment_variables"}, env)
    raw["environment_variables"] = variables
    deja = _merge(raw.get("deja") or {}, _env_overrides(env))
    if overrides:
        deja = _merge(deja, dict(overrides))
    raw, more = _translated(raw, deja, env)
    raw["model_list"] = raw.get("model_list") or []
    raw["config_warnings"] = tuple(warnings + more)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
