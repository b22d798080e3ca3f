"""The submission file: the one module that writes and reads it.

The course's Kaggle competition takes a CSV with the header ``ID,Label``:

- verification: one row per line of ``test_pairs.txt``, in file order; ``ID`` is the pair's
  0-based row index and ``Label`` its similarity score (the cosine of the two embeddings).
  The competition scores the file by ROC AUC, so only the order of the scores matters.
- classification: one row per image of ``cls_data/test``; ``ID`` is the file name and
  ``Label`` the predicted identity (the class folder's name).

Scores are written as the shortest decimal that reads back to the same float32, so a
file read back holds exactly the scores that were computed.
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lib.base.files import atomic_write_text

HEADER = ("ID", "Label")
TASKS = ("verification", "classification")


def format_score(score: float) -> str:
    """A float32 score as the shortest text that reads back to the same float32 ("0.8125")."""
    value = np.float32(score)
    if not np.isfinite(value):
        raise ValueError(f"a score of {float(score)} cannot be submitted: the model's embeddings are not finite")
    return np.format_float_positional(value, unique=True, trim="-")


def verification_rows(scores: Sequence[float]) -> list[tuple[str, str]]:
    """(ID, Label) rows: the pair's 0-based index and its score, in the order given."""
    return [(str(index), format_score(score)) for index, score in enumerate(np.asarray(scores).reshape(-1))]


def classification_rows(file_names: Sequence[str], predicted: Sequence[str]) -> list[tuple[str, str]]:
    """(ID, Label) rows: each test image's file name and its predicted identity."""
    if len(file_names) != len(predicted):
        raise ValueError(f"{len(file_names)} test images but {len(predicted)} predictions")
    return [(str(name), str(label)) for name, label in zip(file_names, predicted)]


def to_csv(rows: Sequence[tuple[str, str]]) -> str:
    """The CSV text: the header, then one line per row (\\n line ends, quoted only where needed)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(HEADER)
    writer.writerows(rows)
    return buffer.getvalue()


def write_submission(path: str | Path, rows: Sequence[tuple[str, str]]) -> Path:
    """Write the CSV atomically (a crash never leaves half a file); the path written."""
    path = Path(path)
    atomic_write_text(path, to_csv(rows))
    return path


def read_rows(text: str) -> list[tuple[str, str]]:
    """The (ID, Label) rows of a submission's text; ValueError naming the line when it is not one."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or tuple(cell.strip() for cell in header) != HEADER:
        raise ValueError(f"a submission starts with the header 'ID,Label', got {','.join(header or [])!r}")
    rows = []
    for number, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != 2:
            raise ValueError(f"line {number}: expected 2 columns (ID,Label), got {len(row)}")
        rows.append((row[0].strip(), row[1].strip()))
    return rows


def read_verification(text: str) -> np.ndarray:
    """The scores of a verification submission, by ID; ValueError unless the IDs run 0, 1, 2, ...
    and every Label is a finite number."""
    scores = []
    for index, (row_id, label) in enumerate(read_rows(text)):
        if row_id != str(index):
            raise ValueError(f"row {index + 1}: ID {row_id!r}, expected {index} (IDs count the pairs from 0)")
        try:
            value = float(label)
        except ValueError:
            raise ValueError(f"row {index + 1}: Label {label!r} is not a number") from None
        if not math.isfinite(value):
            raise ValueError(f"row {index + 1}: Label {label!r} is not a finite number")
        scores.append(value)
    return np.asarray(scores, dtype=np.float64)


def read_labels(text: str) -> np.ndarray:
    """Hidden labels in the competition's solution format (``ID,Label`` with Label 1 same, 0
    different; lines starting with '#' are notes): int64 [P] by ID."""
    kept = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    labels = read_verification(kept)
    if not np.isin(labels, (0.0, 1.0)).all():
        bad = int(np.flatnonzero(~np.isin(labels, (0.0, 1.0)))[0])
        raise ValueError(f"row {bad + 1}: a label is 1 (same person) or 0 (different), got {labels[bad]:g}")
    return labels.astype(np.int64)
