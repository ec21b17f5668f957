"""STAR text → one table per data block, with the line number of every row.

The STAR format (Hall 1991, J. Chem. Inf. Comput. Sci. 31:326) as RELION writes it: ``data_NAME``
blocks, each holding either one ``loop_`` (column labels ``_rlnName``, then one row of
whitespace-separated values per line) or ``_label value`` pairs (read as a one-row table). Values
may be quoted with ``"`` or ``'``; lines starting with ``#`` are comments.

The reader is strict about structure and names the line: a loop or label before any ``data_``
line, a data block name used twice, a column label used twice in one loop, a row with fewer or
more values than the loop has columns, a label without a value, a second table in one block.
Numbers are parsed where a whole column is numeric (``nan`` and ``inf`` included); other columns
stay text, so a value that is not a number is reported by whoever needs the column.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from flexview.errors import FlexviewInputError

END_OF_LOOP = re.compile(r"^[ \t]*(?:data_|loop_|_)", re.M)
COMMENT_LINE = re.compile(r"^[ \t]*#.*$", re.M)
TOKEN = re.compile(r""""[^"]*"|'[^']*'|\S+""")
NAN_TEXT = ["nan", "NaN", "NAN", "-nan", "+nan"]


@dataclass
class StarTable:
    """One data block: ``table`` (rows × columns), the line of its ``data_`` line, and the text of a
    loop's rows, from which :meth:`row_line` finds the line (1-based) of a row on demand."""

    name: str
    table: pd.DataFrame
    line: int
    body: str = ""
    body_line: int = 0
    _lines: np.ndarray | None = field(default=None, repr=False)

    def row_line(self, row: int) -> int:
        """Line number (1-based) of row ``row`` (0-based) of the table."""
        if not self.body:
            return self.line
        if self._lines is None:
            self._lines = np.array([self.body_line + i for i, text in enumerate(self.body.split("\n"))
                                    if text.strip() and not text.lstrip().startswith("#")], dtype=np.int64)
        return int(self._lines[row]) if 0 <= row < len(self._lines) else self.line


def read_star_tables(path: str | Path) -> dict[str, StarTable]:
    """Every data block of a STAR file, by name (``data_particles`` → ``"particles"``).

    Raises :class:`FlexviewInputError` naming the file, the line and the block or column at fault.
    """
    path = Path(path)
    text = _text(path)
    blocks: dict[str, StarTable | None] = {}
    lines_at: dict[str, int] = {}
    pos, line, current = 0, 1, None
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        stripped = text[pos:end].strip()
        if not stripped or stripped.startswith("#"):
            pos, line = end + 1, line + 1
            continue
        token = stripped.split()[0]
        if token.startswith("data_"):
            current = _new_block(token[5:], blocks, lines_at, line, path)
            pos, line = end + 1, line + 1
            continue
        if current is None:
            raise FlexviewInputError(f"line {line}: '{_short(stripped)}' comes before any data_ block line",
                                     path, "data_")
        if blocks[current] is not None:
            raise FlexviewInputError(f"line {line}: a second table in data_{current} (flexview reads one loop or "
                                     "one list of labels per data block)", path, f"data_{current}")
        if token == "loop_":
            blocks[current], pos, line = _loop(text, end + 1, line + 1, current, lines_at[current], path)
        elif token.startswith("_"):
            blocks[current], pos, line = _pairs(text, pos, line, current, lines_at[current], path)
        else:
            raise FlexviewInputError(f"line {line}: '{_short(stripped)}' is not a data_ line, loop_, label or "
                                     "comment", path, f"data_{current}")
    return {name: block if block is not None else StarTable(name, pd.DataFrame(), lines_at[name])
            for name, block in blocks.items()}


def _text(path: Path) -> str:
    if not path.is_file():
        raise FlexviewInputError("file not found", path)
    data = path.read_bytes()
    if b"\0" in data:
        raise FlexviewInputError("not a STAR file: it holds binary data", path, "data_")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FlexviewInputError(f"not a STAR file: byte {exc.start} is not UTF-8 text", path, "data_") from exc


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _new_block(name: str, blocks: dict, lines_at: dict, line: int, path: Path) -> str:
    if name in blocks:
        raise FlexviewInputError(f"line {line}: data_{name} appears a second time (first at line {lines_at[name]})",
                                 path, f"data_{name}")
    blocks[name] = None
    lines_at[name] = line
    return name


def _next_line(text: str, pos: int) -> tuple[str, int]:
    end = text.find("\n", pos)
    end = len(text) if end < 0 else end
    return text[pos:end], end + 1


def _label_lines(text: str, pos: int, line: int) -> tuple[list[tuple[int, str]], int, int]:
    """The consecutive ``_label …`` lines from ``pos`` (blank and comment lines skipped), each as
    (line number, stripped text), and where parsing resumes."""
    found = []
    while pos < len(text):
        raw, after = _next_line(text, pos)
        stripped = raw.strip()
        if stripped and not stripped.startswith("#"):
            if not stripped.startswith("_"):
                break
            found.append((line, stripped))
        pos, line = after, line + 1
    return found, pos, line


def _labels(text: str, pos: int, line: int, block: str, path: Path) -> tuple[list[str], int, int]:
    """The ``_label`` lines of a loop header."""
    lines, pos, line = _label_lines(text, pos, line)
    labels: dict[str, int] = {}
    for number, stripped in lines:
        label = stripped.split()[0][1:]
        if label in labels:
            raise FlexviewInputError(f"line {number}: column {label} appears twice in the loop of data_{block} "
                                     f"(first at line {labels[label]})", path, label)
        labels[label] = number
    if not labels:
        raise FlexviewInputError(f"line {line}: loop_ of data_{block} has no column labels", path, f"data_{block}")
    return list(labels), pos, line


def _loop(text: str, pos: int, line: int, block: str, block_line: int,
          path: Path) -> tuple[StarTable, int, int]:
    """The loop starting after its ``loop_`` line; returns the table and where parsing resumes."""
    labels, pos, line = _labels(text, pos, line, block, path)
    found = END_OF_LOOP.search(text, pos)
    end = found.start() if found else len(text)
    body = text[pos:end]
    frame = _loop_table(body, labels)
    result = StarTable(block, pd.DataFrame(columns=labels) if frame is None else frame, block_line, body, line)
    if frame is None or _suspect_widths(frame):
        _check_widths(result, labels, path)
    after = line + body.count("\n")
    if frame is None:
        raise FlexviewInputError(f"lines {line} to {after - 1}: the rows of data_{block} cannot be read as "
                                 "values (unbalanced quotes?)", path, f"data_{block}")
    return result, end, after


def _loop_table(body: str, labels: list[str]) -> pd.DataFrame | None:
    """Rows of a loop body as a DataFrame, columns numeric where every value is a number; None
    when the text cannot be split into rows of values."""
    if not body.strip():
        return pd.DataFrame({label: pd.Series(dtype=object) for label in labels})
    if "#" in body:
        body = COMMENT_LINE.sub("", body)
    if "'" in body:
        body = body.replace("'", '"')
    try:
        return pd.read_csv(io.StringIO(body), sep=r"\s+", header=None, names=labels, engine="c",
                           keep_default_na=False, na_values=NAN_TEXT, quotechar='"', skip_blank_lines=True)
    except pd.errors.ParserError:
        return None


def _suspect_widths(frame: pd.DataFrame) -> bool:
    """Whether a row may lack values: pandas fills the missing last values of a short row."""
    last = frame.iloc[:, -1]
    return bool(len(frame)) and bool((last.isna() | (last.astype(str) == "")).any())


def _check_widths(table: StarTable, labels: list[str], path: Path) -> None:
    """Every row must hold one value per column; the first row that does not is named by its line."""
    for index, text in enumerate(table.body.split("\n")):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        count = len(TOKEN.findall(text))
        if count == len(labels):
            continue
        line = table.body_line + index
        if count < len(labels):
            raise FlexviewInputError(f"line {line}: {count} values for the {len(labels)} columns of "
                                     f"data_{table.name}; {labels[count]} and later have none", path, labels[count])
        raise FlexviewInputError(f"line {line}: {count} values for the {len(labels)} columns of data_{table.name}",
                                 path, f"data_{table.name}")


def _pairs(text: str, pos: int, line: int, block: str, block_line: int,
           path: Path) -> tuple[StarTable, int, int]:
    """Consecutive ``_label value`` lines as a one-row table."""
    first = line
    lines, pos, line = _label_lines(text, pos, line)
    values: dict[str, object] = {}
    for number, stripped in lines:
        tokens = TOKEN.findall(stripped)
        label = tokens[0][1:]
        if len(tokens) != 2:
            raise FlexviewInputError(f"line {number}: label {label} needs exactly one value, found {len(tokens) - 1}",
                                     path, label)
        if label in values:
            raise FlexviewInputError(f"line {number}: label {label} appears twice in data_{block}", path, label)
        values[label] = _value(tokens[1])
    return StarTable(block, pd.DataFrame([values]), first), pos, line


def _value(token: str):
    """A single value: int, float or text (quotes removed)."""
    if token[:1] in "'\"" and token[-1:] == token[:1] and len(token) > 1:
        return token[1:-1]
    for kind in (int, float):
        try:
            return kind(token)
        except ValueError:
            pass
    return token
