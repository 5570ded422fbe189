"""`make screenshots`: every console page, as the README shows it, from the bundled samples.

Replays `samples/` into a fresh database (the plan's steps recorded, one step approved once so
that the two-person state shows, one incident triaged), serves the console on loopback and has
headless Chromium (Debian's, driven by Playwright) write a PNG of each page to docs/screenshots/.

    .venv/bin/python scripts/screenshots.py [--out docs/screenshots]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from aegis import runtime, settings
from aegis.approvals import web
from aegis.approvals.triage import Triager
from aegis.correlate import detections
from aegis.pipeline import Message
from aegis.records import views
from aegis.respond import playbooks
from aegis.respond.record import Responder
from aegis.store import SqliteStore

ROOT = Path(__file__).resolve().parents[1]

PAGES = [  # (file, path, viewport width, whole page)
    ("incidents.png", "/console", 1280, True),
    ("incident.png", "/console/incidents/{top}", 1280, True),
    ("approvals.png", "/console/approvals", 1280, False),
    ("approvals-phone.png", "/console/approvals", 390, False),
    ("audit.png", "/console/audit", 1280, False),
    ("coverage.png", "/console/coverage", 1280, False),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    args = parser.parse_args()
    browser_path = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser_path is None:
        raise SystemExit("screenshots: Debian's chromium is needed (scripts/ensure-chromium.sh installs it)")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "screens.db"
        store = SqliteStore(db)
        plan = playbooks.load()
        pipeline = runtime.build_pipeline(settings.load(db=db), store)
        pipeline.process([Message(p.read_bytes(), hub="demo") for p in sorted((ROOT / "samples").rglob("*.json"))])
        responder = Responder(plan, store)
        responder.respond([v.incident for v in views(store.incidents()) if v.status != "superseded"])
        waiting = store.steps(status=["awaiting_approval"])
        two = next((s for s in waiting if s.approvals == 2), None)
        if two is not None:
            responder.decide(two.key, "duty@contoso.com", "0d0d0d0d-1111-2222-3333-444444444444", approve=True)
        incidents = sorted(store.incidents(), key=lambda i: i.severity.value != "critical")
        top = incidents[0]
        Triager(store).apply(top, "acknowledge", "ana@contoso.com", "0a0a0a0a-1111-2222-3333-444444444444")
        Triager(store).apply(top, "comment", "ana@contoso.com", "0a0a0a0a-1111-2222-3333-444444444444",
                             text="203.0.113.45 is no caller of ours. Keys rotation requested.")  # fmt: skip
        console = web.Console.over(store, plan, web.local_identity("oncall@contoso.com", plan),
                                   detections=detections.load().detections)  # fmt: skip
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(web.create_app(console), host="127.0.0.1", port=port, log_level="warning")
        )
        threading.Thread(target=server.run, daemon=True).start()
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=browser_path, headless=True, args=["--no-sandbox"])
            for name, path, width, whole in PAGES:
                page = browser.new_page(viewport={"width": width, "height": 844 if width < 500 else 900})
                page.goto(f"http://127.0.0.1:{port}{path.format(top=top.id)}")
                page.screenshot(path=str(args.out / name), full_page=whole)
                page.close()
                print(f"screenshots: {args.out / name}")
            browser.close()
        server.should_exit = True
        store.close()


if __name__ == "__main__":
    main()
