"""Small file helpers shared by every layer: JSON written whole, read with a clear error."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kws.errors import DataError


def write_json(obj: object, path: Path) -> None:
    """Pretty JSON with a final newline, written to a temporary file then renamed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    tmp.replace(path)


def read_json(path: Path, hint: str = "") -> Any:
    """JSON of a file, or a DataError naming it (and what to run first, as hint says)."""
    if not path.is_file():
        raise DataError(f"{path} not found" + (f" ({hint})" if hint else ""))
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON ({exc})") from exc
