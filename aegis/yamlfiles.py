"""YAML files validated by a pydantic model (detections, playbooks, the response plan): one way to
read them and one way to say what is wrong — the file, the line and column, the field, and for a
misspelt key the one that was meant (`file.yaml:5:1: windw: unknown field; did you mean window?`)."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from aegis.errors import AegisError

M = TypeVar("M", bound=BaseModel)
SHOWN = 5  # problems listed at most; the rest are counted


def load_model(model: type[M], path: Path, error: type[AegisError]) -> M:
    """`path` read as YAML and validated by `model`; `error` says where and what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{path}: no such file (check the path; a folder is read file by file)") from None
    except IsADirectoryError:
        raise error(f"{path}: is a folder, not a YAML file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        raw = yaml.safe_load(text)
        tree = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}{at}: not valid YAML: {problem}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(describe(exc, path, tree, model, raw)) from None


def describe(
    exc: ValidationError, path: Path | None = None, tree: Any = None, model: type[BaseModel] | None = None,
    raw: Any = None,
) -> str:  # fmt: skip
    """Each problem (the first `SHOWN`) as `file:line:column: field.path: message`; an unknown key
    with the known one it is closest to."""
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")  # a misspelt key explains the rest
    known = sorted(_field_names(model)) if model is not None else []
    lines = []
    for e in errors[:SHOWN]:
        loc = _in_file(raw, [p for p in e["loc"] if not str(p).startswith(("function-after", "tagged-union"))],
                       keep_last=e["type"] in ("missing", "extra_forbidden"))  # fmt: skip
        where = ".".join(str(p) for p in loc)
        at = _mark(tree, loc) if tree is not None and loc else None  # a whole-file problem has no line
        head = f"{path}:{at[0]}:{at[1]}" if path and at else str(path) if path else ""
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            message = "unknown field"
            close = difflib.get_close_matches(str(loc[-1]) if loc else "", known, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean {close[0]}?"
        lines.append(": ".join(x for x in (head, where, message) if x))
    more = f"\n(and {exc.error_count() - SHOWN} more)" if exc.error_count() > SHOWN else ""
    return "\n".join(lines) + more


def _in_file(raw: Any, loc: list[Any], *, keep_last: bool) -> list[Any]:
    """The error's path as the file writes it: without the names pydantic gives union members
    (`match.all.all.0.test.gte` is `match.all.0.gte`). A step the data cannot take is such a name,
    unless it is the last of a missing or unknown key."""
    if raw is None:
        return loc
    out, node = [], raw
    for n, part in enumerate(loc):
        dict_key = isinstance(node, dict) and part in node
        if dict_key or (isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)):
            node = node[part]
        elif not (keep_last and n == len(loc) - 1):
            continue
        out.append(part)
    return out


def _mark(node: Any, loc: Sequence[Any]) -> tuple[int, int] | None:
    """The line and column (1-based) of the YAML node at `loc`, or of the deepest node on the way."""
    at = (node.start_mark.line + 1, node.start_mark.column + 1) if node is not None else None
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if str(key.value) == str(part):
                    child = value
                    at = (key.start_mark.line + 1, key.start_mark.column + 1)
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            child = node.value[part]
            at = (child.start_mark.line + 1, child.start_mark.column + 1)
        if child is None:
            return at
        node = child
    return at


def _field_names(model: type[BaseModel]) -> set[str]:
    """Every field name and alias of the model and of the models its fields hold."""
    seen: set[type[BaseModel]] = set()
    names: set[str] = set()

    def walk(m: type[BaseModel]) -> None:
        if m in seen:
            return
        seen.add(m)
        for name, f in m.model_fields.items():
            names.add(f.alias or name)
            for t in _types(f.annotation):
                walk(t)

    walk(model)
    return names


def _types(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    elif get_origin(annotation) is not None:
        for arg in get_args(annotation):
            yield from _types(arg)
