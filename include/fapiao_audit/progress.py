"""Progress of a night on stderr: files read and stages done.

DuckDB's and GX's own progress bars are off (they would interleave with each other and flood
Airflow's logs); this replaces them with the job's own account. On a terminal it is one live
line, rewritten in place; anywhere else (a pipe, a log file, an Airflow task log) it is one
line per file read and per stage done, so a log shows how far a night got.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .model import FileReport

__all__ = ["Progress"]

_PREFIX = "fapiao-audit: "


class Progress:
    """Reports a night's stages to ``stream``; ``live`` rewrites one line (default: when a terminal)."""

    def __init__(self, stream: TextIO | None = None, *, live: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if live is None:
            isatty = getattr(self.stream, "isatty", None)
            live = bool(isatty and isatty())
        self.live = live
        self._stage: str | None = None
        self._t0 = 0.0
        self._files = 0
        self._rows = 0
        self._dirty = False  # a live line waits to be ended

    def _line(self, text: str) -> None:
        if self.live:
            self.stream.write("\r\x1b[K" + _PREFIX + text)
            self._dirty = True
        else:
            self.stream.write(_PREFIX + text + "\n")
        self.stream.flush()

    def _end_line(self) -> None:
        if self._dirty:
            self.stream.write("\n")
            self.stream.flush()
            self._dirty = False

    def stage_started(self, name: str) -> None:
        self._stage, self._t0 = name, time.perf_counter()
        if self.live:
            self._line(f"{name} ...")

    def file_read(self, report: FileReport) -> None:
        """One delivered file has been read (ingest)."""
        self._files += 1
        self._rows += report.rows_read
        if report.duplicate_of is not None:
            what = f"same bytes as {report.duplicate_of}, not read again"
        else:
            what = (
                f"{report.rows_read:,} rows read ({report.rows_loaded:,} loaded, "
                f"{report.rows_rejected:,} rejected)"
            )
        self._line(f"{self._stage or 'ingest'}: {report.file}: {what}")

    def stage_done(self, name: str, seconds: float | None = None) -> None:
        if seconds is None:
            seconds = time.perf_counter() - self._t0
        detail = f" ({self._files:,} files, {self._rows:,} rows read)" if name == "ingest" else ""
        self._line(f"{name} done in {seconds:.1f} s{detail}")
        if self.live and name != "publish":
            return  # the next stage's line replaces it
        self._end_line()

    def close(self) -> None:
        """End a live line left open (a stage that failed)."""
        self._end_line()
