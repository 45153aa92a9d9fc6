"""Finance's decisions on findings, read back from the acknowledgements folder: the closed loop, no server.

Finance fills the workbook's 处理状态 / 处理说明 columns (or writes a CSV with ``finding id, status,
note``) and saves the file into the acknowledgements folder. Every run reads each file there that it
has not read before (by checksum) and records each decision in DuckDB with its file, sheet, row and
checksum, and the night it was read: a decision is in force from that night on, so a rerun of an
earlier night still publishes what it published. Who decided is the file's 处理人 / owner column,
else the file's name. A decision remembers the values it was taken on (``values_hash``): when the
finding's values change, the finding shows as re-opened.

A file never stops a night: a line naming an unknown finding, an unknown status word, or a file that
cannot be read at all is recorded as a problem, with its line and reason, and shown in the night's
outputs.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

import duckdb

from .db import execute_sql, named_sql
from .files import sha256_file
from .model import DECISION_WORDS, DECISIONS, REOPENED
from .xlsx import NotPlain, Workbook, XlsxError

#: Header words of the three columns (compared lower-case without spaces, underscores or line breaks;
#: a header cell that starts with one of them counts, so "编号 Finding id" is the id column).
_ID_HEADERS = ("finding_id", "findingid", "编号", "id")
_STATUS_HEADERS = ("处理状态", "decision", "status", "状态")
_NOTE_HEADERS = ("处理说明", "decision_note", "decisionnote", "note", "说明", "备注")
_OWNER_HEADERS = ("处理人", "decided_by", "decidedby", "owner", "负责人")
#: Words in a status column that are no decision (the workbook shows re-opened findings so).
_NO_DECISION = {"", REOPENED[0], "reopened", "重新打开", "-", "—"}
_FORMATS = {".csv", ".xlsx"}
#: A decision file larger than this is not read (a decision file is a list of findings, not a delivery).
MAX_FILE_BYTES = 200 << 20


@dataclass(frozen=True)
class Problem:
    """A line of a decision file that could not be taken (or the whole file: row None)."""

    file: str
    sheet: str | None
    row: int | None
    reason: str


@dataclass(frozen=True)
class ReadResult:
    """What one run read from the acknowledgements folder."""

    files: tuple[dict[str, Any], ...] = ()
    decisions: int = 0
    problems: tuple[Problem, ...] = ()


def _norm_header(text: str | None) -> str:
    return "".join((text or "").split()).replace("_", "").lower()


def _find(headers: list[str], names: tuple[str, ...]) -> int | None:
    keys = [_norm_header(h) for h in headers]
    wanted = [n.replace("_", "").lower() for n in names]
    for w in wanted:  # exact first, then a header that starts with the word
        if w in keys:
            return keys.index(w)
    for w in wanted:
        for i, k in enumerate(keys):
            if k.startswith(w) and w not in ("id",):
                return i
    return None


def decision_code(word: str | None) -> str | None:
    """The decision a status word names, None for no decision; raises ValueError for an unknown word."""
    text = "".join((word or "").split())
    if text in _NO_DECISION or text.lower() in _NO_DECISION:
        return None
    for candidate in (text, text.lower(), text.split("/")[0].strip(), text.split("/")[-1].strip().lower()):
        if candidate in DECISION_WORDS:
            return DECISION_WORDS[candidate]
        if candidate in DECISIONS:
            return candidate
    raise ValueError(word)


def _tables(path: Path) -> list[tuple[str | None, list[tuple[int, list[str | None]]]]]:
    """(sheet, rows) of a decision file; rows as (1-based row number, cells)."""
    if path.suffix.lower() == ".csv":
        raw = path.read_bytes()
        for enc in ("utf-8-sig", "gb18030"):
            try:
                text = raw.decode(enc)
                break
            except UnicodeDecodeError:
                continue
        else:
            raise ValueError("text is neither UTF-8 nor GBK/GB18030")
        sample = text[:4096]
        delim = max([",", "\t", ";"], key=sample.split("\n", 1)[0].count)
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
        return [(None, [(reader.line_num, list(row)) for row in reader])]
    out: list[tuple[str | None, list[tuple[int, list[str | None]]]]] = []
    with Workbook(path) as wb:
        for name in wb.sheet_names:
            try:
                rows = list(wb.rows(name))
            except NotPlain:  # valid XML the fast reader does not read (a formula, rich text): with expat
                rows = list(wb.rows(name, fast=False))
            out.append((name, rows))
    return out


def _header_row(
    rows: list[tuple[int, list[str | None]]],
) -> tuple[int, int, int, int | None, int | None] | None:
    """(index in rows, id column, status column, note column, owner column) of the first of the first
    10 rows that names an id and a status column."""
    for i, (_n, cells) in enumerate(rows[:10]):
        headers = [c or "" for c in cells]
        fid, status = _find(headers, _ID_HEADERS), _find(headers, _STATUS_HEADERS)
        if fid is not None and status is not None and fid != status:
            return i, fid, status, _find(headers, _NOTE_HEADERS), _find(headers, _OWNER_HEADERS)
    return None


def read_folder(con: duckdb.DuckDBPyConnection, folder: Path | None, night: date) -> ReadResult:
    """Read every decision file in ``folder`` not read before, record its decisions and problems.

    Runs in one transaction; the caller's connection must hold the night's findings history.
    """
    if folder is None:
        return ReadResult()
    execute_sql(con, named_sql("findings.sql", "macros"), {})
    # Problems with no file to record them under (the folder, an unreadable file) are tonight's only:
    # a rerun finds them again.
    con.execute("DELETE FROM decision_problems WHERE read_night = $n AND file_sha256 = ''", {"n": night})
    known = {r[0] for r in con.execute("SELECT file_sha256 FROM decision_files").fetchall()}
    files_read: list[dict[str, Any]] = []
    problems: list[Problem] = []
    rows_in: list[list[Any]] = []
    problem_rows: list[list[Any]] = []
    file_rows: list[list[Any]] = []
    now = datetime.now().astimezone()
    try:
        paths = sorted(folder.iterdir())
    except OSError as e:
        paths = []
        problems.append(
            Problem(str(folder), None, None, f"the acknowledgements folder cannot be read: {e.strerror or e}")
        )
        problem_rows.append(["", str(folder), night, None, None, problems[-1].reason])
    for path in paths:
        if path.name.startswith((".", "~$")) or not path.is_file() or path.suffix.lower() not in _FORMATS:
            continue
        name = path.name
        try:
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise ValueError(f"larger than {MAX_FILE_BYTES >> 20} MB; not a decision file")
            sha = sha256_file(path)
        except (OSError, ValueError) as e:
            problems.append(Problem(name, None, None, f"cannot be read: {e}"))
            problem_rows.append(["", name, night, None, None, problems[-1].reason])
            continue
        if sha in known:
            continue
        known.add(sha)
        found: list[Problem] = []
        decided: list[list[Any]] = []
        try:
            tables = _tables(path)
        except (OSError, ValueError, XlsxError, csv.Error) as e:
            tables = []
            found.append(Problem(name, None, None, f"cannot be read: {e}"))
        if tables and all(_header_row(rows) is None for _s, rows in tables):
            found.append(
                Problem(
                    name, None, None, "no header row with a finding id (编号) and a status (处理状态) column"
                )
            )
        for sheet, rows in tables:
            header = _header_row(rows)
            if header is None:
                continue
            at, c_id, c_status, c_note, c_owner = header
            for row_number, cells in rows[at + 1 :]:

                def cell(i: int | None, cells: list[str | None] = cells) -> str:
                    return (cells[i] or "").strip() if i is not None and i < len(cells) else ""

                fid, word = cell(c_id), cell(c_status)
                try:
                    code = decision_code(word)
                except ValueError:
                    found.append(
                        Problem(
                            name,
                            sheet,
                            row_number,
                            f"unknown status {word[:40]!r}; use one of "
                            + ", ".join(f"{zh} ({en})" for zh, en, _c in DECISIONS.values()),
                        )
                    )
                    continue
                if code is None:
                    continue
                if not fid:
                    found.append(Problem(name, sheet, row_number, "a status without a finding id (编号)"))
                    continue
                decided.append(
                    [
                        fid.upper(),
                        code,
                        cell(c_note) or None,
                        cell(c_owner) or Path(name).stem,
                        night,
                        None,
                        name,
                        sheet,
                        row_number,
                        sha,
                        now,
                    ]
                )
        # Values the decision was taken on: the finding as last published before tonight.
        ids = sorted({d[0] for d in decided})
        hashes: dict[str, str] = {}
        if ids:
            hashes = dict(
                con.execute(
                    "SELECT finding_id, arg_max(fa_values_hash(category, issuer_value, registry_value, issuer_total, "
                    "registry_total), night) FROM fa_items_upto($n) WHERE finding_id IN (SELECT unnest($ids)) "
                    "GROUP BY finding_id",
                    {"n": night, "ids": ids},
                ).fetchall()
            )
        taken = 0
        for d in decided:
            if d[0] not in hashes:
                found.append(
                    Problem(
                        name, d[7], d[8], f"unknown finding id {d[0][:40]!r} (no published night holds it)"
                    )
                )
                continue
            d[5] = hashes[d[0]]
            rows_in.append(d)
            taken += 1
        problems.extend(found)
        problem_rows.extend([sha, name, night, p.sheet, p.row, p.reason] for p in found)
        file_rows.append([sha, name, night, taken, len(found), now])
        files_read.append({"file": name, "sha256": sha, "decisions": taken, "problems": len(found)})
    con.execute("BEGIN TRANSACTION")
    try:
        if rows_in:
            con.executemany("INSERT INTO decisions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows_in)
        if problem_rows:
            con.executemany("INSERT INTO decision_problems VALUES (?, ?, ?, ?, ?, ?)", problem_rows)
        if file_rows:
            con.executemany("INSERT INTO decision_files VALUES (?, ?, ?, ?, ?, ?)", file_rows)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return ReadResult(tuple(files_read), len(rows_in), tuple(problems))


def night_decisions(con: duckdb.DuckDBPyConnection, night: date) -> dict[str, Any]:
    """What summary.json says of decisions on a night: the files read that night and their problems, and
    how many decisions are in force."""
    files = [
        {"file": f, "sha256": s, "decisions": int(d), "problems": int(p)}
        for f, s, d, p in con.execute(
            "SELECT file, file_sha256, decisions, problems FROM decision_files WHERE read_night = $n "
            "ORDER BY file, file_sha256",
            {"n": night},
        ).fetchall()
    ]
    problems = [
        {"file": f, "sheet": sh, "row": r, "reason": why}
        for f, sh, r, why in con.execute(
            "SELECT file, sheet, row_number, reason FROM decision_problems WHERE read_night = $n "
            "ORDER BY file, sheet NULLS FIRST, row_number NULLS FIRST, reason",
            {"n": night},
        ).fetchall()
    ]
    in_force = con.execute(
        "SELECT count(DISTINCT finding_id) FROM decisions WHERE read_night <= $n", {"n": night}
    ).fetchall()[0][0]
    return {"files_read": files, "problems": problems, "in_force": int(in_force)}
