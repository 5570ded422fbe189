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

# Secrets that follow a word saying what they are: an Authorization header's credentials, key=value
# pairs of connection strings, SAS URLs and function keys, and header lines.
_AFTER_NAME = re.compile(
    r"(?i)(\bbearer\s+|\b(?:accountkey|sharedaccesskey|sharedaccesssignature|sig|password|pwd|client_secret|"
    r"api[-_]?key|subscription-key|code)=|\b(?:api-key|ocp-apim-subscription-key|x-api-key|x-functions-key|"
    r"authorization)\s*:\s*)([^\s;&\"']+)"
)
_NAMING = ("bearer", "=", "key:", "key :", "authorization")  # a text with none of these has nothing for `_AFTER_NAME`
# a 40-hex Defender for Endpoint machine id or a SHA-256 is an identifier, not a key: keep those
_IDENTIFIER = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
# Secrets that look like secrets on their own: JWTs, long hex (Azure AI keys are 32 hex digits), and long
# mixed-case base64 (storage keys, newer AI keys, tokens). Found as long runs first, then judged one by one.
_RUN = re.compile(r"[A-Za-z0-9+/=_.\-]{32,}")
_HEX = re.compile(r"[0-9a-fA-F]{32,}")
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")


@lru_cache(maxsize=4096)
def _compact(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def is_model_text(name: str) -> bool:
    """A field that holds model input or output: never stored."""
    return _MODEL_TEXT_NAME.search(_compact(name)) is not None


def is_secret_name(name: str) -> bool:
    return _SECRET_NAME.search(_compact(name)) is not None


@lru_cache(maxsize=8192)  # user agents and alert descriptions repeat: each distinct text is judged once
def text(value: str) -> str:
    """`value` with anything that looks like a secret replaced by `[redacted]`."""
    if len(value) < 20:  # nothing shorter matches; the common case costs one length check
        return value
    lowered = value.lower()
    if any(word in lowered for word in _NAMING):
        value = _AFTER_NAME.sub(lambda m: m.group(1) + REDACTED, value)
    return _RUN.sub(_judge, value)


def _judge(m: re.Match[str]) -> str:
    run = m.group(0)
    if _JWT.search(run):
        return _JWT.sub(REDACTED, run)
    if run.startswith("/") or "//" in run or "." in run.strip("."):  # a path, a URL or a host name: not a key
        return run
    for part in re.split(r"[=_\-]+", run):
        if _IDENTIFIER.match(part.lower()):
            continue  # a machine id or a SHA-256 is an identifier, not a key
        if _HEX.fullmatch(part) or (
            len(part) >= 40 and any(c.isdigit() for c in part) and any(c.isupper() for c in part)
            and any(c.islower() for c in part)
        ):  # fmt: skip
            return REDACTED
    return run


def field(name: str, value: str) -> str | None:
    """What to keep of a named text field: None (drop it), `[redacted]`, or the text redacted."""
    if is_model_text(name):
        return None
    if is_secret_name(name):
        return REDACTED
    return text(value)
