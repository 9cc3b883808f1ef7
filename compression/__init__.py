"""Prompt compression: pure functions over OpenAI chat message lists, run before the cache.

``lossless`` (the default) only makes changes that cannot change meaning; ``auto`` adds query-aware
passage selection in the newest user message and trimming of old history in frozen blocks. Nothing at
or before an Anthropic ``cache_control`` marker, no tool call argument and no image is ever touched.
"""

from compression.core import compress
from compression.errors import CompressionError, InvalidMessagesError
from compression.lossless import normalize_messages
from compression.tokens import count_text_tokens, count_tokens
from compression.values import CompressionOptions, CompressionReport, EmbedFn, Level, parse_level

__all__ = [
    "CompressionError",
    "CompressionOptions",
    "CompressionReport",
    "EmbedFn",
    "InvalidMessagesError",
    "Level",
    "compress",
    "count_text_tokens",
    "count_tokens",
    "normalize_messages",
    "parse_level",
]
