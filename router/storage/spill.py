"""An append-only JSON-lines file holding usage rows that could not wait in memory.

Rows are appended past the writer's memory bound and replayed in batches from a read offset; once every
line has been replayed and written, the file is truncated. A crash between a replayed write and the
truncation only replays rows again, which the storage ignores (``request_id`` is the primary key).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import BinaryIO

from router.storage.models import USAGE_COLUMNS, UsageRecord

log = logging.getLogger("deja.storage")


class SpillFile:
    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.pending = 0  # lines appended and not yet replayed successfully
        self.corrupt = 0  # unreadable lines skipped (a torn last line after a crash)
        self._offset = 0  # bytes already replayed
        self._fh: BinaryIO | None = None

    def open(self) -> None:
        """Open for appending, counting rows a previous run left behind."""
        if self._fh is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open for the writer's lifetime
        if self._fh.tell() > 0:
            with open(self.path, "rb") as fh:
                data = fh.read()
            self.pending = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
            if not data.endswith(b"\n"):  # a torn line: end it so the next append starts cleanly
                self._fh.write(b"\n")
                self._fh.flush()

    def append(self, record: UsageRecord) -> None:
        if self._fh is None:
            self.open()
        assert self._fh is not None
        row = {c: getattr(record, c) for c in USAGE_COLUMNS}
        self._fh.write(json.dumps(row, separators=(",", ":")).encode() + b"\n")
        self.pending += 1

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def read_batch(self, n: int) -> tuple[list[UsageRecord], int, int]:
        """Up to ``n`` rows from the read offset: (records, new offset, lines consumed)."""
        self.flush()
        records: list[UsageRecord] = []
        lines = 0
        with open(self.path, "rb") as fh:
            fh.seek(self._offset)
            offset = self._offset
            while lines < n:
                line = fh.readline()
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
                lines += 1
                try:
                    records.append(UsageRecord(**json.loads(line)))
                except (ValueError, TypeError):
                    if line.strip():
                        self.corrupt += 1
                        log.warning("skipping an unreadable line in spill file %s", self.path)
        return records, offset, lines

    def commit(self, offset: int, lines: int) -> None:
        """Mark rows up to ``offset`` as written; truncate the file once everything is replayed."""
        self._offset = offset
        self.pending = max(0, self.pending - lines)
        self.flush()
        if self._offset >= os.path.getsize(self.path):
            if self._fh is not None:
                self._fh.truncate(0)
            else:
                self.path.write_bytes(b"")
            self._offset = 0
            self.pending = 0

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
