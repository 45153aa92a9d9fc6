"""Publish: write a night's files beside their final place, then swap them in atomically.

A reader of ``<reports>/<night>/`` sees the previous complete version or the new complete
version, never a mix: the files are written into ``<reports>/.<night>.tmp-<run>/`` (manifest
last, every file fsynced), and the folder is exchanged with the published one in a single
``renameat2(RENAME_EXCHANGE)`` (plain rename when nothing was published yet). A crash at any
point leaves the previously published version intact; leftovers are swept on the next run of
the night. A failed write (a full disk: ENOSPC, also when a library wraps it) becomes one
:class:`PublishError`, exit 2. ``latest`` moves only after a complete swap, and only to a night
with a manifest. Paths are built only from the validated night, never from data.
"""

from __future__ import annotations

import csv
import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import re
import shutil
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa

from .db import _flock
from .errors import PublishError
from .files import sha256_file
from .index import INDEX_NAME, write_index
from .masking import mark_bidi
from .model import CSV_COLUMNS

#: exceptions.csv's header row (the columns and their order are the model's).
EXCEPTIONS_COLUMNS = CSV_COLUMNS
#: GX's own validation results of the night: a list of ExpectationSuiteValidationResult.to_json_dict(),
#: one per suite run (registry, each issuing system, reconciliation).
GX_RESULTS_FILE = "gx_results.json"
OUTPUT_FILES = (
    "exceptions.csv",
    "exceptions.xlsx",
    "summary.json",
    GX_RESULTS_FILE,
    "report.html",
    "manifest.json",
)

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux). False when the kernel or libc cannot."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


def _fsync(path: Path) -> None:
    """Make a file's contents, or a folder's entries, durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, date):
        return v.isoformat()
    return str(v)


#: A plain number (an amount such as -500.00): written as it is, never neutralised.
_PLAIN_NUMBER = re.compile(r"[+-]?\d+(\.\d+)?")
#: What a spreadsheet reads as a formula at the start of a cell (OWASP, CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(text: str) -> str:
    """Direction controls made visible (masking.mark_bidi), and text a spreadsheet would run as a formula
    gets a leading ' (also where trimming would expose one:
    ' =1+1'). A program reading exceptions.csv gets the raw value back by dropping that one leading '
    where the character after it is one of = + - @, a tab, a carriage return or white space."""
    text = mark_bidi(text)
    if (
        text
        and (text.startswith(_FORMULA_START) or text.lstrip().startswith(_FORMULA_START))
        and not _PLAIN_NUMBER.fullmatch(text)
    ):
        return "'" + text
    return text


def write_exceptions_csv(
    path: Path,
    batches: Iterable[pa.RecordBatch],
    transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> int:
    """UTF-8 with BOM, header row, one row per finding; every value written as text, formula starts
    neutralised (csv_safe)."""
    n = 0
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        w = csv.writer(f, lineterminator="\r\n")
        w.writerow(EXCEPTIONS_COLUMNS)
        for batch in batches:
            for row in batch.to_pylist():
                if transform:
                    row = transform(row)
                w.writerow([csv_safe(_text(row.get(c))) for c in EXCEPTIONS_COLUMNS])
                n += 1
        f.flush()
        os.fsync(f.fileno())
    return n


def write_json(path: Path, data: Any) -> None:
    with path.open("w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=2, default=_text)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


def write_text(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


#: How long a publish waits for another run publishing into the same reports folder.
PUBLISH_LOCK_TIMEOUT_S = 600.0


class NightWriter:
    """A night's output folder under construction; ``commit()`` swaps it into place."""

    def __init__(self, reports: Path, night: date, run_id: str) -> None:
        if not isinstance(night, date):
            raise TypeError("night must be a date")
        self.reports = reports
        self.night = night
        self.final = reports / night.isoformat()
        self.tmp = reports / f".{night.isoformat()}.tmp-{run_id}"
        self.run_id = run_id

    def __enter__(self) -> NightWriter:
        try:
            self.reports.mkdir(parents=True, exist_ok=True)
            # One publisher at a time per reports folder (runs on different databases may share it): the
            # sweep of one must never remove the other's folder under construction. The lock is an flock on
            # the folder itself: nothing is left in it, and the kernel releases it however the run ends.
            self._lock = os.open(self.reports, os.O_RDONLY | os.O_DIRECTORY)
            if not _flock(self._lock, fcntl.LOCK_EX, PUBLISH_LOCK_TIMEOUT_S):
                os.close(self._lock)
                raise PublishError(
                    f"{self.reports}: another run kept publishing into this folder for "
                    f"{PUBLISH_LOCK_TIMEOUT_S:g} s; nothing was published"
                )
            try:
                sweep(self.reports, self.night)
                self.tmp.mkdir()
            except BaseException:
                os.close(self._lock)
                raise
        except OSError as e:
            raise PublishError(
                f"{self.reports}: cannot prepare the reports folder: {e.strerror or e}"
            ) from None
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        try:
            self._exit(exc)
        finally:
            os.close(self._lock)  # releases the publish lock

    def _exit(self, exc: BaseException | None) -> None:
        if self.tmp.exists():
            shutil.rmtree(self.tmp, ignore_errors=True)
        if exc is not None and not isinstance(exc, PublishError):
            os_error = _os_error_in(exc)
            if os_error is not None:
                # A full disk, a quota, a read-only folder: one clear message, exit 2.
                raise PublishError(
                    f"{self.final}: cannot write the night ({os_error.strerror or os_error}); "
                    "nothing was published, the previously published version is intact"
                ) from None

    def path(self, name: str) -> Path:
        if name not in OUTPUT_FILES:
            raise ValueError(name)
        return self.tmp / name

    def write_manifest(self, extra: dict[str, Any]) -> None:
        files = []
        for name in OUTPUT_FILES[:-1]:
            p = self.tmp / name
            _fsync(p)  # every file durable before the manifest vouches for it
            files.append({"name": name, "bytes": p.stat().st_size, "sha256": sha256_file(p)})
        write_json(self.tmp / "manifest.json", {**extra, "night": self.night.isoformat(), "files": files})

    def commit(self) -> Path:
        """Swap the finished folder into place and move ``latest`` if this is the newest night."""
        try:
            _fsync(self.tmp)
            if not (self.tmp / "manifest.json").is_file():
                raise PublishError(f"{self.final}: refusing to publish a night without its manifest")
            if self.final.exists() and not self.final.is_symlink():
                if not _renameat2_exchange(self.tmp, self.final):
                    # Fallback without RENAME_EXCHANGE: a short window where the night is absent.
                    # A crash inside it leaves the previous version under .old-, and `sweep`
                    # puts it back before anything else happens to this night.
                    old = self.reports / f".{self.night.isoformat()}.old-{self.run_id}"
                    os.rename(self.final, old)
                    try:
                        os.rename(self.tmp, self.final)
                    except OSError:
                        os.rename(old, self.final)
                        raise
                    shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(self.tmp, self.final)
            _fsync(self.reports)
        except OSError as e:
            raise PublishError(f"{self.final}: cannot publish: {e.strerror or e}") from None
        shutil.rmtree(self.tmp, ignore_errors=True)  # the previous version, after an exchange
        try:
            update_latest(self.reports)
        except OSError as e:
            raise PublishError(
                f"{self.final}: published, but {self.reports / 'latest'} could not be moved: {e.strerror or e}"
            ) from None
        try:
            write_index(self.reports, published_nights(self.reports))
        except OSError as e:
            raise PublishError(
                f"{self.final}: published, but {self.reports / INDEX_NAME} could not be rewritten: {e.strerror or e}"
            ) from None
        return self.final


def sweep(reports: Path, night: date) -> None:
    """Clean up after interrupted runs of this night.

    A previous version parked under ``.<night>.old-*`` (a crash inside the fallback swap) is put
    back when the night is absent; every other leftover (``.tmp-*`` folders: unfinished new
    versions, or old versions after an exchange) is removed.
    """
    final = reports / night.isoformat()
    prefix_tmp = f".{night.isoformat()}.tmp-"
    prefix_old = f".{night.isoformat()}.old-"
    leftovers = sorted(
        p for p in reports.iterdir() if p.name.startswith((prefix_tmp, prefix_old)) and p.is_dir()
    )
    if not final.exists() and not final.is_symlink():
        for p in leftovers:
            if p.name.startswith(prefix_old) and (p / "manifest.json").is_file():
                os.rename(p, final)
                _fsync(reports)
                break
    for p in leftovers:
        if p.exists():
            shutil.rmtree(p, ignore_errors=True)
    for p in reports.glob(f".{INDEX_NAME}.tmp-*"):  # an index page a killed run did not finish
        p.unlink(missing_ok=True)


def published_nights(reports: Path) -> list[date]:
    out: list[date] = []
    if not reports.is_dir():
        return out
    for p in reports.iterdir():
        try:
            d = date.fromisoformat(p.name)
        except ValueError:
            continue
        if (p / "manifest.json").is_file():
            out.append(d)
    return sorted(out)


def update_latest(reports: Path) -> None:
    """Point ``latest`` at the newest complete night, replacing the link atomically."""
    nights = published_nights(reports)
    if not nights:
        return
    target = nights[-1].isoformat()
    link = reports / "latest"
    if link.is_symlink() and os.readlink(link) == target:
        return
    if link.exists() and not link.is_symlink():
        raise PublishError(f"{link}: exists and is not a link; cannot point it at {target}")
    tmp = reports / f".latest.tmp-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(target, tmp)
    os.replace(tmp, link)
    _fsync(reports)


def _os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind an exception (libraries such as XlsxWriter wrap it), if any."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def masked_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``summary`` fit for publishing with masking on.

    Expectation samples of buyer columns are masked like the buyer values of a finding; every
    other text has resident identity numbers masked. Counts, checksums and numbers are untouched.
    """
    from .masking import BUYER_FIELDS, mask_free_text, mask_record

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return mask_free_text(v)
        if isinstance(v, dict):
            out = {k: walk(x) for k, x in v.items()}
            if out.get("column") in BUYER_FIELDS and isinstance(v.get("unexpected_sample"), list):
                out["unexpected_sample"] = [
                    mask_record({"field": v["column"], "issuer_value": x})["issuer_value"]
                    if isinstance(x, str)
                    else walk(x)
                    for x in v["unexpected_sample"]
                ]
            return out
        if isinstance(v, list | tuple):
            return [walk(x) for x in v]
        return v

    return walk(summary)


def masked_gx_results(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A copy of the night's GX results fit for publishing with masking on (as :func:`masked_summary`).

    A buyer column's values (a column-map expectation's unexpected values, a row's ``buyer_name``)
    are masked like a finding's buyer values; every other text has resident identity numbers masked.
    """
    from .masking import BUYER_FIELDS, mask_free_text, mask_record

    def buyer(column: str, value: Any) -> Any:
        if isinstance(value, str):
            return mask_record({"field": column, "issuer_value": value})["issuer_value"]
        return walk(value, None)

    def walk(v: Any, column: str | None) -> Any:
        if isinstance(v, str):
            return mask_free_text(v)
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if k in BUYER_FIELDS:
                    out[k] = buyer(k, x)
                elif (
                    column is not None
                    and k in ("partial_unexpected_list", "unexpected_list")
                    and isinstance(x, list)
                ):
                    out[k] = [buyer(column, y) for y in x]
                elif column is not None and k == "partial_unexpected_counts" and isinstance(x, list):
                    out[k] = [
                        {**walk(c, None), "value": buyer(column, c.get("value"))}
                        if isinstance(c, dict)
                        else walk(c, None)
                        for c in x
                    ]
                else:
                    out[k] = walk(x, column)
            return out
        if isinstance(v, list | tuple):
            return [walk(x, column) for x in v]
        return v

    out = []
    for suite_result in results:
        evrs = []
        for evr in suite_result.get("results") or []:
            kwargs = (
                ((evr.get("expectation_config") or {}).get("kwargs") or {}) if isinstance(evr, dict) else {}
            )
            column = kwargs.get("column") if kwargs.get("column") in BUYER_FIELDS else None
            evrs.append(walk(evr, column))
        out.append({**walk({k: v for k, v in suite_result.items() if k != "results"}, None), "results": evrs})
    return out


def gx_results_digest(results: list[dict[str, Any]]) -> dict[str, Any]:
    """What the report says of gx_results.json: the file, suite runs, expectations evaluated, passed, failed."""
    runs = len(results)
    evaluated = sum(int((r.get("statistics") or {}).get("evaluated_expectations") or 0) for r in results)
    passed = sum(int((r.get("statistics") or {}).get("successful_expectations") or 0) for r in results)
    return {
        "file": GX_RESULTS_FILE,
        "suite_runs": runs,
        "failed_runs": sum(1 for r in results if not r.get("success")),
        "evaluated": evaluated,
        "passed": passed,
        "failed": evaluated - passed,
    }
