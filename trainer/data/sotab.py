"""SOTAB v2 CTA format: reading, validating and writing tables and ground truth.

A split directory holds one ground-truth CSV (`table_name,column_index,label`) and the tables it names, one gzip
JSON-lines file per table (one record per row, keys are column indices) in `tables/` or beside the CSV. A dataset
directory holds split directories (`training`, `training_columns`, `validation`, ...), or is itself a split.
Everything malformed raises `DataError` naming the file and row, so a bad download never trains silently.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from swarm.model_server.model.tables import DataError, Table, load_labels

GT_HEADER = ["table_name", "column_index", "label"]


@dataclass(frozen=True)
class ColumnRef:
    """One annotated column: which table, which column, and its label (None when unlabelled)."""

    table: str
    column: int
    label: str | None = None


@dataclass
class Split:
    """Tables plus their annotated columns, as read from one split directory."""

    name: str
    tables: dict[str, Table]
    columns: list[ColumnRef]
    source: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)


def _cell_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    # Nested values (rare in SOTAB) are kept losslessly as their JSON text.
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def table_from_rows(name: str, rows: Sequence[Mapping[str, object]], *, where: str = "") -> Table:
    """Build a column-major table from SOTAB row records; raises DataError on malformed records."""
    where = where or name
    width = 0
    for i, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise DataError(f"{where}: row {i} is {type(row).__name__}, expected a JSON object")
        for key in row:
            if not (isinstance(key, str) and key.isdigit()):
                raise DataError(f"{where}: row {i} has key {key!r}; keys must be column indices '0', '1', ...")
            width = max(width, int(key) + 1)
    if not rows or width == 0:
        raise DataError(f"{where}: table has no cells")
    columns = tuple(tuple(_cell_text(row.get(str(j))) for row in rows) for j in range(width))
    return Table(name=name, columns=columns)


def read_table(path: Path, name: str | None = None) -> Table:
    """Read one gzip JSON-lines table."""
    rows: list[Mapping[str, object]] = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}: row {i} is not valid JSON ({exc.msg})") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read gzip JSON lines ({exc})") from None
    return table_from_rows(name or path.name, rows, where=str(path))


def write_table(path: Path, table: Table) -> None:
    """Write a table in the SOTAB format (missing cells are omitted from the row record)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0: the same table always gives the same bytes (reproducible generated datasets).
    with gzip.GzipFile(path, "wb", mtime=0) as raw, io.TextIOWrapper(raw, encoding="utf-8") as fh:
        for i in range(table.n_rows):
            record = {str(j): col[i] for j, col in enumerate(table.columns) if col[i] != ""}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")


def _has_gt_header(path: Path) -> bool:
    """Whether the CSV's first line is exactly the ground-truth header (not, e.g., a predictions file beside it,
    whose header only starts the same way)."""
    with path.open(encoding="utf-8-sig", errors="replace") as fh:
        return fh.readline().strip() == ",".join(GT_HEADER)


def _find_gt_csv(split_dir: Path) -> Path:
    candidates = sorted(split_dir.glob("*.csv"))
    if len(candidates) > 1:  # e.g. `swarm annotate --out` wrote predictions into the split: keep the ground truth
        candidates = [p for p in candidates if _has_gt_header(p)]
    if len(candidates) != 1:
        raise DataError(f"{split_dir}: expected exactly one ground-truth CSV, found {len(candidates)}")
    return candidates[0]


def read_ground_truth(csv_path: Path, labels: Iterable[str]) -> list[ColumnRef]:
    """Read `table_name,column_index,label`; unknown labels and bad indices raise DataError with the row."""
    known = set(labels)
    refs: list[ColumnRef] = []
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header != GT_HEADER:
            raise DataError(f"{csv_path}: header is {header}, expected {','.join(GT_HEADER)}")
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != 3:
                raise DataError(f"{csv_path}: row {line_no} has {len(row)} fields, expected 3")
            table, index, label = row
            if not index.strip().isdigit():
                raise DataError(f"{csv_path}: row {line_no}: column_index {index!r} is not a non-negative integer")
            if label not in known:
                raise DataError(f"{csv_path}: row {line_no}: unknown label {label!r}")
            refs.append(ColumnRef(table=table, column=int(index), label=label))
    return refs


def load_split(split_dir: Path, labels: Sequence[str] | None = None) -> Split:
    """Load one split directory, checking that every annotated column exists in its table."""
    split_dir = Path(split_dir)
    if not split_dir.is_dir():
        raise DataError(f"{split_dir}: not a directory")
    labels = labels if labels is not None else load_labels(_labels_file_near(split_dir))
    csv_path = _find_gt_csv(split_dir)
    refs = read_ground_truth(csv_path, labels)
    table_dir = split_dir / "tables" if (split_dir / "tables").is_dir() else split_dir
    tables: dict[str, Table] = {}
    for line_no, ref in enumerate(refs, start=2):
        if ref.table not in tables:
            path = table_dir / ref.table
            if not path.is_file():
                raise DataError(f"{csv_path}: row {line_no}: table file {path} does not exist")
            tables[ref.table] = read_table(path)
        width = len(tables[ref.table].columns)
        if ref.column >= width:
            raise DataError(
                f"{csv_path}: row {line_no}: column_index {ref.column} but {ref.table} has {width} columns"
            )
    return Split(name=split_dir.name, tables=tables, columns=refs, source=split_dir)


def _labels_file_near(path: Path) -> Path | None:
    for candidate in (path / "labels.txt", path.parent / "labels.txt"):
        if candidate.is_file():
            return candidate
    return None


def is_split_dir(path: Path) -> bool:
    return path.is_dir() and any(_has_gt_header(p) for p in path.glob("*.csv"))


def load_dataset(root: Path, splits: Sequence[str] | None = None) -> dict[str, Split]:
    """Load a dataset directory (split subdirectories) or a single split directory, by split name."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data directory does not exist")
    labels = load_labels(_labels_file_near(root))
    if is_split_dir(root):
        return {root.name: load_split(root, labels)}
    found = sorted(p for p in root.iterdir() if is_split_dir(p))
    if splits is not None:
        missing = set(splits) - {p.name for p in found}
        if missing:
            raise DataError(f"{root}: missing split(s) {sorted(missing)}; found {[p.name for p in found]}")
        found = [p for p in found if p.name in splits]
    if not found:
        raise DataError(f"{root}: no SOTAB split found (a folder with a table_name,column_index,label CSV)")
    return {p.name: load_split(p, labels) for p in found}


def write_split(split_dir: Path, tables: Iterable[Table], columns: Iterable[ColumnRef], gt_name: str) -> None:
    """Write a split in the SOTAB layout: `tables/<name>` plus `<gt_name>` ground truth."""
    split_dir = Path(split_dir)
    (split_dir / "tables").mkdir(parents=True, exist_ok=True)
    for table in tables:
        write_table(split_dir / "tables" / table.name, table)
    with (split_dir / gt_name).open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(GT_HEADER)
        for ref in columns:
            writer.writerow([ref.table, ref.column, ref.label])
