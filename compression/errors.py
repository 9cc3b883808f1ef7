"""Errors raised by the compression package."""

from __future__ import annotations


class CompressionError(Exception):
    """Base class of compression errors (bad level string, malformed message list)."""


class InvalidMessagesError(CompressionError):
    """The message list is not a list of JSON objects."""
