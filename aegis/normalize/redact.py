"""Secrets and prompts stay out of stored events.

Alerts carry the caller's context in loosely named extended properties, and attackers put
whatever they like into the fields Aegis keeps (a user agent, an alert's description, an end-user
id). What an event keeps is stored, shown in the console and sent to Sentinel and Teams, so:

- a field whose *name* says it holds a secret (`Authorization`, `api-key`, `Ocp-Apim-Subscription-Key`,
  a password, token, key or connection string) is kept as `[redacted]`;
- a field whose name says it holds model input or output (a prompt, a completion, messages, a
  request or response body) is dropped: prompts and completions are never stored;
- in every other kept text, a value that *looks* like a secret is replaced where it stands: bearer
  tokens, JWTs, `AccountKey=` / `SharedAccessKey=` / `sig=` / `password=` pairs of connection strings
  and SAS URLs, `api-key: ...` header lines, and long runs of hex or base64 such as Azure AI keys.

The raw message bodies are kept as they came (the dead-letter and evidence store) for the retention
period only (`AEGIS_RETENTION`), and are never displayed.
"""

from __future__ import annotations

import re
from functools import lru_cache

REDACTED = "[redacted]"

_SECRET_NAME = re.compile(
    r"authorization|apikey|subscriptionkey|password|passwd|pwd|secret|token|credential|connectionstring|"
    r"accountkey|accesskey|sharedaccess|sastoken|signature|cookie|privatekey|clientkey"
)
_MODEL_TEXT_NAME = re.compile(r"prompt|completion|messages|requestbody|responsebody|requestcontent|responsecontent")

_SECRET_VALUE = re.compile(
    r"(?i)\bbearer\s+[a-z0-9\-._~+/]+=*"  # an Authorization header's credentials
    r"|\beyJ[a-z0-9_-]{8,}\.[a-z0-9_-]{8,}\.[a-z0-9_-]*"  # a JWT
    r"|\b(?:accountkey|sharedaccesskey|sharedaccesssignature|sig|password|pwd|client_secret|api[-_]?key|"
    r"subscription-key|code)=[^;&\s\"']+"  # key=value pairs of connection strings, SAS URLs, function keys
    r"|\b(?:api-key|ocp-apim-subscription-key|x-api-key|x-functions-key|authorization)\s*:\s*\S+"  # header lines
    r"|\b[0-9a-f]{32,}\b"  # long hex: Azure AI services keys are 32 hex digits
    r"|(?<![A-Za-z0-9+/])(?=[A-Za-z0-9+/]*\d)(?=[A-Za-z0-9+/]*[A-Z])(?=[A-Za-z0-9+/]*[a-z])[A-Za-z0-9+]"
    r"[A-Za-z0-9+/]{39,}={0,2}"  # long mixed-case base64: storage keys, newer AI keys, tokens (not a path)
)
# a 40-hex Defender for Endpoint machine id or a SHA-1 is an identifier, not a key: keep those
_IDENTIFIER = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")


@lru_cache(maxsize=4096)
def _compact(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def is_model_text(name: str) -> bool:
    """A field that holds model input or output: never stored."""
    return _MODEL_TEXT_NAME.search(_compact(name)) is not None


def is_secret_name(name: str) -> bool:
    return _SECRET_NAME.search(_compact(name)) is not None


def text(value: str) -> str:
    """`value` with anything that looks like a secret replaced by `[redacted]`."""
    if len(value) < 20:  # nothing shorter matches; the common case costs one length check
        return value
    return _SECRET_VALUE.sub(_replace, value)


def _replace(m: re.Match[str]) -> str:
    found = m.group(0)
    return found if _IDENTIFIER.match(found) else REDACTED


def field(name: str, value: str) -> str | None:
    """What to keep of a named text field: None (drop it), `[redacted]`, or the text redacted."""
    if is_model_text(name):
        return None
    if is_secret_name(name):
        return REDACTED
    return text(value)
