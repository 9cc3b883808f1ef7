"""deja's settings: one frozen, typed object built from a YAML file plus ``DEJA_*`` environment variables.

The YAML file is LiteLLM proxy's ``config.yaml`` format (``model_list``, ``router_settings``,
``litellm_settings``, ``general_settings``), plus a ``deja:`` section for deja's own settings. Any string value
``os.environ/NAME`` is replaced by that environment variable. Environment variables override the ``deja:``
section: ``DEJA_PORT=9000``, ``DEJA_MASTER_KEY=...``, nested with a double underscore:
``DEJA_CACHE__BACKEND=redis``. Invalid configuration raises ``ConfigError`` naming the bad field.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


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


class CompressionSettings(_Section):
    default: Literal["off", "lossless", "auto"] = "lossless"
    per_model: dict[str, Literal["off", "lossless", "auto"]] = Field(default_factory=dict)
    auto_min_tokens: int = Field(2000, ge=0)
    auto_ratio: float = Field(4.0, ge=1.0)
    auto_scorer: Literal["lexical", "embedding"] = "lexical"


class LimitsSettings(_Section):
    backend: Literal["auto", "memory", "redis"] = "auto"
    failure_mode: Literal["closed", "open"] = "closed"
    default_max_tokens: int = Field(1024, ge=0)  # completion estimate when a request sets no max_tokens


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
    deja: DejaSettings = DejaSettings()

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
        raw = loaded
    raw = _resolve_env(raw, env)
    deja = _merge(raw.get("deja") or {}, _env_overrides(env))
    if overrides:
        deja = _merge(deja, dict(overrides))
    raw["deja"] = deja
    raw["model_list"] = raw.get("model_list") or []
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from exc
