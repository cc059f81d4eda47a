"""Text tables (CSV, TSV): one row per sample, numeric feature columns and one label column.

The delimiter — tab, comma or semicolon — is the one the first line holds most of. A header row
is recognised when some column's first cell is text and its second a number. Feature cells must
be finite numbers; labels may be any non-empty text.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from convexrobust.errors import InvalidInputError, InvalidInputTypeError

__all__ = ["class_order", "read_table"]


def class_order(labels: Iterable[str]) -> list[str]:
    """The distinct labels, in numeric order when every label is a number, else alphabetical."""
    classes = sorted(set(labels))
    if all(_is_number(c) for c in classes):
        classes.sort(key=float)
    return classes


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def read_table(path: Path, label_column: str | int | None) -> tuple[np.ndarray, list[str], int]:
    """Features (n, d) float64, label texts and the number of columns of a CSV/TSV file."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise InvalidInputError(f"{path} is not a UTF-8 text table ({err.reason} at byte "
                                f"{err.start})") from None
    first = next((line for line in lines if line.strip()), "")
    delimiter = max("\t,;", key=first.count)
    if not first.count(delimiter):
        raise InvalidInputError(f"{path} is not a table: its first line has no tab, comma or "
                                "semicolon between feature and label columns")
    reader = csv.reader(lines, delimiter=delimiter)
    rows, line_numbers = [], []
    for row in reader:
        if any(cell.strip() for cell in row):
            rows.append([cell.strip() for cell in row])
            line_numbers.append(reader.line_num)
    width = len(rows[0])
    for row, line in zip(rows, line_numbers, strict=True):
        if len(row) != width:
            raise InvalidInputError(f"line {line} of {path} has {len(row)} fields, the first "
                                    f"row {width}")
    header = None
    if len(rows) > 1 and any(a and not _is_number(a) and _is_number(b)
                             for a, b in zip(rows[0], rows[1], strict=True)):
        header, rows, line_numbers = rows[0], rows[1:], line_numbers[1:]
    if not rows:
        raise InvalidInputError(f"{path} has no data rows")
    names = [repr(h) for h in header] if header else [f"{j}" for j in range(width)]
    if label_column is None:
        label = width - 1
    elif isinstance(label_column, str):
        if header is None or label_column not in header:
            found = f"its columns are {', '.join(header)}" if header else "it has no header row"
            raise InvalidInputError(f"no column {label_column!r} in {path} ({found}); pass "
                                    "label_column= a column name or index")
        label = header.index(label_column)
    elif isinstance(label_column, (int, np.integer)) and not isinstance(label_column, bool):
        if not -width <= label_column < width:
            raise InvalidInputError(f"label_column={label_column} is out of range: {path} has "
                                    f"{width} columns")
        label = int(label_column) % width
    else:
        raise InvalidInputTypeError(f"label_column must be a column name or index, got "
                                    f"{type(label_column).__name__}")
    columns = list(zip(*rows, strict=True))
    features = []
    for j in (j for j in range(width) if j != label):
        try:
            values = np.array(columns[j], dtype=np.float64)
        except ValueError:
            i = next(i for i, cell in enumerate(columns[j]) if not _is_number(cell))
            raise InvalidInputError(
                f"column {names[j]} of {path} is not numeric (line {line_numbers[i]}: "
                f"{columns[j][i]!r}); features must be numbers: encode or drop the column, or "
                "pass label_column= if it holds the labels") from None
        if not np.isfinite(values).all():
            i = int(np.flatnonzero(~np.isfinite(values))[0])
            raise InvalidInputError(f"column {names[j]} of {path} has a non-finite value (line "
                                    f"{line_numbers[i]}: {columns[j][i]!r}); fill or drop it")
        features.append(values)
    if "" in columns[label]:
        i = columns[label].index("")
        raise InvalidInputError(f"line {line_numbers[i]} of {path} has no label (column "
                                f"{names[label]})")
    return np.stack(features, axis=1), list(columns[label]), width
