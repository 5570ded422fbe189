"""The Teams app package a Teams admin uploads so that the on-call channel's team has the bot:
`manifest.json` (Teams app manifest 1.17) and its two icons, in one zip (`aegis teams manifest`).

The package names the Azure Bot by its app id (the managed identity's client id) and the console's
host as its only valid domain; nothing secret is in it.
"""

from __future__ import annotations

import io
import struct
import uuid
import zipfile
import zlib
from typing import Any
from urllib.parse import urlsplit

import orjson

SCHEMA = "https://developer.microsoft.com/en-us/json-schemas/teams/v1.17/MicrosoftTeams.schema.json"
ACCENT = (0x1F, 0x4E, 0x79)  # the console's dark blue


def manifest(bot_id: str, console_url: str, *, version: str = "1.0.0") -> dict[str, Any]:
    host = urlsplit(console_url).hostname or ""
    return {
        "$schema": SCHEMA,
        "manifestVersion": "1.17",
        "version": version,
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"aegis-teams-app:{bot_id}")),  # stable per bot
        "developer": {
            "name": "Aegis",
            "websiteUrl": console_url,
            "privacyUrl": console_url,
            "termsOfUseUrl": console_url,
        },
        "name": {"short": "Aegis", "full": "Aegis AI incident response"},
        "description": {
            "short": "Approve or deny the response steps Aegis proposes for AI incidents.",
            "full": "Aegis posts an approval card in the on-call channel for each disruptive response step it "
            "proposes (containment, key rotation, sign-out, disabling a user) and escalates when nobody decides. "
            "Approve or deny on the card; the console has the evidence.",
        },
        "icons": {"color": "color.png", "outline": "outline.png"},
        "accentColor": "#{:02X}{:02X}{:02X}".format(*ACCENT),
        "bots": [{"botId": bot_id, "scopes": ["team"], "supportsFiles": False, "isNotificationOnly": False}],
        "permissions": ["identity", "messageTeamMembers"],
        "validDomains": [host] if host else [],
    }


def package(bot_id: str, console_url: str) -> bytes:
    """The zip Teams admins upload: the manifest and the two icons at its root."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("manifest.json", orjson.dumps(manifest(bot_id, console_url), option=orjson.OPT_INDENT_2))
        z.writestr("color.png", _png(192, (*ACCENT, 255)))
        z.writestr("outline.png", _png(32, (255, 255, 255, 255), ring=True))
    return buffer.getvalue()


def _png(size: int, rgba: tuple[int, int, int, int], *, ring: bool = False) -> bytes:
    """A square RGBA PNG of one colour (`ring`: a white outline on transparency, as Teams asks)."""
    rows = []
    for y in range(size):
        row = bytearray([0])  # filter: none
        for x in range(size):
            edge = min(x, y, size - 1 - x, size - 1 - y) < 3
            row += bytes(rgba) if (edge or not ring) else b"\x00\x00\x00\x00"
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )
