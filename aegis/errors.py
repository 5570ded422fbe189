"""Exceptions of Aegis, and what a caller does about each.

AegisError                  anything Aegis raises on purpose
├── MalformedInput          a message or record that cannot be used: dead-letter it, go on
├── ConfigurationError      a missing or invalid setting: stop at start-up, name the setting
├── InputNotFound           a CLI input path that does not exist
└── StoreError              the state store refused or failed
    └── StoreUnavailable    a transient fault (locked, unreachable, throttled): raise, so the
                            Event Hubs trigger's retry policy replays the batch
"""

from __future__ import annotations


class AegisError(Exception):
    """Base of every exception Aegis raises on purpose."""


class MalformedInput(AegisError):
    """Input that cannot be normalized. The message is the dead-letter reason: keep it short,
    and never put payload content in it (it is logged)."""


class ConfigurationError(AegisError):
    """A setting is missing or invalid."""


class InputNotFound(AegisError):
    """A path given to the CLI does not exist or is not readable."""


class StoreError(AegisError):
    """The state store failed in a way a retry will not fix."""


class StoreUnavailable(StoreError):
    """The state store failed in a way a retry may fix."""
