"""Replay logged traffic through the cache offline: what would it have answered, saved, and got wrong?

``run_replay`` (runner.py) takes requests in time order (records.py: a JSONL file or deja's usage rows), makes
one expensive pass (engine.py: scopes, keys, one embedding per distinct text, nearest earlier entries) and
one cheap pass per setting (sweep.py), and returns a JSON-able report that report.py prints as a table and
html.py writes as a self-contained page.
"""

from cache.replay.html import write_html
from cache.replay.progress import ProgressBar
from cache.replay.records import Judge, ReadReport, ReplayInputError, ReplayRequest, read_jsonl
from cache.replay.report import format_table, write_json
from cache.replay.runner import ReplayOptions, run_replay

__all__ = [
    "Judge",
    "ProgressBar",
    "ReadReport",
    "ReplayInputError",
    "ReplayOptions",
    "ReplayRequest",
    "format_table",
    "read_jsonl",
    "run_replay",
    "write_html",
    "write_json",
]
