"""Token counting: tiktoken for OpenAI models, LiteLLM's counter for others, cl100k when unknown.

Everything is offline. tiktoken reads the encoding files LiteLLM bundles (``TIKTOKEN_CACHE_DIR`` is
pointed at them before tiktoken loads anything), and models whose LiteLLM tokenizer would be downloaded
from the Hugging Face hub (Llama, Cohere Command-R, Replicate) are counted with cl100k instead.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Encodings whose files LiteLLM bundles; anything else would be downloaded, so it falls back to cl100k.
_BUNDLED_ENCODINGS = frozenset({"cl100k_base", "o200k_base", "p50k_base"})
_DEFAULT_ENCODING = "cl100k_base"
_OPENAI_PROVIDERS = frozenset({"openai", "azure", "text-completion-openai", "azure_text"})
_DOWNLOADING_MARKERS = ("llama-2", "llama-3", "replicate", "command-r")
# OpenAI's accounting for chat messages: tokens per message envelope, per name, and reply priming.
_PER_MESSAGE = 3
_PER_NAME = 1
REPLY_PRIMING = 3
_IMAGE_TOKENS = 85  # a low-detail image; images are never compressed, so this only has to be consistent


def _point_tiktoken_at_bundled_files() -> None:
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        return
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return
    bundled = Path(list(spec.submodule_search_locations)[0]) / "litellm_core_utils" / "tokenizers"
    if bundled.is_dir():
        os.environ["TIKTOKEN_CACHE_DIR"] = str(bundled)


_point_tiktoken_at_bundled_files()

import tiktoken  # noqa: E402  (must come after TIKTOKEN_CACHE_DIR is set)


@functools.cache
def _encoding(name: str) -> tiktoken.Encoding:
    return tiktoken.get_encoding(name)


def litellm_module() -> Any:
    """LiteLLM, through the one module that owns deja's use of it (imported lazily: it is slow to import and only
    needed for non-OpenAI models)."""
    from providers.litellm_api import litellm

    return litellm


def model_info(model: str) -> dict[str, Any] | None:
    """LiteLLM's bundled entry for ``model`` (also tried without a ``provider/`` prefix), or None."""
    try:
        cost = litellm_module().model_cost
    except Exception:
        return None
    for key in (model, model.split("/", 1)[-1]):
        info = cost.get(key)
        if isinstance(info, dict):
            return info
    return None


def _provider_of(model: str) -> str | None:
    info = model_info(model)
    return None if info is None else str(info.get("litellm_provider") or "") or None


def _tiktoken_encoding_name(model: str) -> str | None:
    bare = model.split("/", 1)[1] if model.split("/", 1)[0] in _OPENAI_PROVIDERS else model
    try:
        name = tiktoken.encoding_name_for_model(bare)
    except KeyError:
        return None
    return name if name in _BUNDLED_ENCODINGS else _DEFAULT_ENCODING


@functools.lru_cache(maxsize=256)
def _counter_for(model: str) -> Callable[[str], int]:
    """Pick (once per model name) the function that counts a text's tokens."""
    name = _tiktoken_encoding_name(model)
    if name is not None:
        return _tiktoken_counter(name)
    provider = _provider_of(model)
    if provider is None or provider in _OPENAI_PROVIDERS:
        return _tiktoken_counter(_DEFAULT_ENCODING)
    if any(marker in model.lower() for marker in _DOWNLOADING_MARKERS):
        return _tiktoken_counter(_DEFAULT_ENCODING)
    litellm = litellm_module()
    return lambda text: int(litellm.token_counter(model=model, text=text)) if text else 0


def _tiktoken_counter(name: str) -> Callable[[str], int]:
    encoding = _encoding(name)
    return lambda text: len(encoding.encode(text, disallowed_special=())) if text else 0


def count_text_tokens(text: str, model: str) -> int:
    """Tokens of a plain text under ``model``'s tokenizer (cl100k for unknown models)."""
    return _counter_for(model)(text)


def _content_tokens(content: Any, count: Callable[[str], int]) -> int:
    if isinstance(content, str):
        return count(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            total += count(part["text"])
        elif part.get("type") in ("image_url", "image", "input_image"):
            total += _IMAGE_TOKENS
    return total


def message_tokens(message: dict[str, Any], model: str) -> int:
    """Tokens one chat message costs: envelope, name, text content and tool calls."""
    count = _counter_for(model)
    total = _PER_MESSAGE + _content_tokens(message.get("content"), count)
    if isinstance(message.get("name"), str):
        total += _PER_NAME + count(message["name"])
    for call in message.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            total += count(str(function.get("name") or "")) + count(str(function.get("arguments") or ""))
    return total


def count_tokens(messages: list[dict[str, Any]], model: str) -> int:
    """Prompt tokens of a chat message list under ``model``'s tokenizer (OpenAI's message accounting)."""
    if not messages:
        return 0
    return REPLY_PRIMING + sum(message_tokens(m, model) for m in messages if isinstance(m, dict))
