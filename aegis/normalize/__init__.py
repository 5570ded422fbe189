"""Normalizers: decoded items → `Event`s. Importing this package registers the built-in ones,
in the order they are tried (`registry.select` takes the first that accepts an item)."""

from aegis.normalize import defender, diagnostics  # noqa: F401  (registration order matters)
from aegis.normalize.registry import REGISTRY, Ignored, Normalizer, normalizer, select

__all__ = ["REGISTRY", "Ignored", "Normalizer", "normalizer", "select"]
