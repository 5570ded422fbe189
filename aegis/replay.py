"""Message bodies from files, for `aegis replay` and `aegis demo`: the same bytes an event hub
would deliver, so a body in a file is processed exactly as it would be from Event Hubs.

- a `.json` file is one message body, byte for byte;
- a `.jsonl` / `.ndjson` file (or any other named file, such as an exported `.log`) holds one body
  per non-empty line; so does a `.json` file when asked (`--lines`: storage exports, `PT1H.json`);
- a folder is searched recursively for `.json`, `.jsonl` and `.ndjson` files, in name order.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from aegis.errors import InputNotFound
from aegis.pipeline import Message

WHOLE_FILE = {".json"}
LINE_FILES = {".jsonl", ".ndjson"}


def collect(paths: Iterable[Path]) -> list[Path]:
    """The files to replay, checked up front so a typo fails before anything is stored."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in WHOLE_FILE | LINE_FILES)
            if not found:
                raise InputNotFound(f"{path} holds no .json, .jsonl or .ndjson file")
            files += found
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise InputNotFound(f"{path} is neither a file nor a folder")
        else:
            raise InputNotFound(f"no such file or folder: {path}")
    return files


def messages(path: Path, hub: str, *, per_line: bool = False) -> Iterator[Message]:
    """The bodies of one file; `per_line` reads a `.json` file as one body per line too (storage
    account exports such as `PT1H.json` hold one record per line)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputNotFound(f"cannot read {path}: {exc.strerror}") from None
    if path.suffix.lower() in WHOLE_FILE and not per_line:
        yield Message(body=data, hub=hub)
        return
    for line in data.splitlines():
        if line.strip():
            yield Message(body=line, hub=hub)
