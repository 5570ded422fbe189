"""YAML files validated by a pydantic model (detections, playbooks, the response plan): one way to
read them and one way to say what is wrong, naming the file and the field."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from aegis.errors import AegisError

M = TypeVar("M", bound=BaseModel)


def load_model(model: type[M], path: Path, error: type[AegisError]) -> M:
    """`path` read as YAML and validated by `model`; `error` names the file and the field."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"{path}: cannot read YAML: {exc}") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise error(f"{path}: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    """`field.path: message` of a validation error's first problem (and how many more there are)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("function-after", "tagged-union")))
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where or 'file'}: {first['msg']}{more}"
