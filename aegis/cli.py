"""`aegis`: the command line. It drives the same `Pipeline` as the Event Hubs triggers.

Every error is one line on stderr and a non-zero exit: 1 for a problem with the input, the
database or a setting; 2 for a wrong option (from click); 70 for a bug (set AEGIS_DEBUG=1 to see
the traceback).
"""

from __future__ import annotations

import base64
import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from aegis import log, replay, settings
from aegis.errors import AegisError, InputNotFound
from aegis.events import AiResource, Ip, User
from aegis.pipeline import Counts, Message, Pipeline
from aegis.store import Store, open_store

app = typer.Typer(
    name="aegis",
    help="Aegis: ingest, normalize and store Defender for Cloud AI alerts and AI diagnostic logs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

BATCH = 500
PROGRESS_FROM_BYTES = 2_000_000
SAMPLES = Path(__file__).resolve().parent.parent / "samples"

DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="SQLite database file [default: $AEGIS_DB or ./aegis.db].", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON array, one object per row.")]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="At most this many rows.")]


class _Options:
    verbose = False


@app.callback()
def _global(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each dead letter and batch.")] = False,
) -> None:
    _Options.verbose = verbose


@contextmanager
def _store(db: Path | None, *, must_exist: bool) -> Iterator[tuple[settings.Settings, Store]]:
    cfg = settings.load(db=db)
    log.configure(json=cfg.log_format == "json", level=cfg.log_level if _Options.verbose else "ERROR")
    if must_exist and cfg.store == "sqlite" and not cfg.db.exists():
        raise InputNotFound(f"no database at {cfg.db}: run `aegis replay PATH` or `aegis demo` first, or pass --db")
    store = open_store(cfg)
    try:
        yield cfg, store
    finally:
        store.close()


def _replay(cfg: settings.Settings, store: Store, files: list[Path], hub: str, per_line: bool) -> Counts:
    pipeline = Pipeline(store, limits=cfg.limits)
    total = Counts()
    sizes = [p.stat().st_size for p in files]
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        console=err, transient=True, disable=sum(sizes) < PROGRESS_FROM_BYTES or not err.is_terminal,
    )  # fmt: skip
    with progress:
        task = progress.add_task("replaying", total=sum(sizes))
        done = 0
        for path, file_size in zip(files, sizes, strict=True):
            batch: list[Message] = []
            for message in replay.messages(path, hub, per_line=per_line):
                batch.append(message)
                if len(batch) >= BATCH:
                    total.add(pipeline.process(batch))
                    progress.advance(task, sum(len(m.body) + 1 for m in batch))
                    batch = []
            if batch:
                total.add(pipeline.process(batch))
            done += file_size
            progress.update(task, completed=done)
    return total


def _where(cfg: settings.Settings) -> str:
    return str(cfg.db) if cfg.store == "sqlite" else "Azure Table Storage"


def _print_counts(c: Counts, files: int, where: str) -> None:
    out.print(f"Replayed {c.messages} messages from {files} file(s) into {where}")
    rows = [
        ("messages", c.messages, ""),
        ("  with events", c.with_events, ""),
        ("  ignored", c.ignored, "valid, nothing to watch (assessments, secure scores, empty envelopes)"),
        ("  dead-lettered", c.dead_lettered, "see `aegis deadletters`" if c.dead_lettered else ""),
        ("events", c.events, f"{c.new_events} new, {c.duplicates} duplicates"),
        ("dead letters", c.dead_letters, f"{c.new_dead_letters} new"),
    ]
    for label, value, note in rows:
        out.print(f"  {label:<16}{value:>7}   {note}".rstrip())


@app.command("replay")
def replay_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders of message bodies.", show_default=False)],
    db: DbOption = None,
    hub: Annotated[str, typer.Option(help="Source hub name recorded on events and dead letters.")] = "replay",
    lines: Annotated[bool, typer.Option("--lines", help="Read .json files as one body per line too.")] = False,
) -> None:
    """Process message bodies from files exactly as if they came from Event Hubs.

    A .json file is one body; a .jsonl or .ndjson file has one body per line.
    """
    files = replay.collect(paths)
    with _store(db, must_exist=False) as (cfg, store):
        counts = _replay(cfg, store, files, hub, lines)
    _print_counts(counts, len(files), _where(cfg))


@app.command("events")
def events_cmd(db: DbOption = None, as_json: JsonOption = False, limit: LimitOption = None) -> None:
    """List the normalized events, oldest first."""
    with _store(db, must_exist=True) as (_, store):
        events = store.events(limit=limit)
    if as_json:
        sys.stdout.buffer.write(orjson.dumps([e.to_dict() for e in events], option=orjson.OPT_INDENT_2) + b"\n")
        return
    table = Table("time (UTC)", "source", "kind", "resource", "sev", "entities", box=None)
    table.columns[0].no_wrap = True
    for e in events:
        entities = ", ".join(sorted({x.type for x in e.entities}))
        table.add_row(
            e.time.strftime("%Y-%m-%d %H:%M:%S"), e.source.value, e.kind,
            (e.resource.name or e.resource.id) if e.resource else "", e.severity or "", entities,
        )  # fmt: skip
    out.print(table)
    out.print(f"{len(events)} event(s)")


@app.command("deadletters")
def deadletters_cmd(db: DbOption = None, as_json: JsonOption = False, limit: LimitOption = None) -> None:
    """List the dead-lettered messages with their reasons (with --json, their original bytes too)."""
    with _store(db, must_exist=True) as (_, store):
        dls = store.dead_letters(limit=limit)
        if as_json:
            rows = []
            for d in dls:
                body = store.raw(d.message) or b""
                try:
                    text: str | None = body.decode("utf-8")
                except UnicodeDecodeError:
                    text = None
                rows.append({**d.to_dict(), "body": text, "body_base64": base64.b64encode(body).decode()})
            sys.stdout.buffer.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")
            return
    table = Table("received (UTC)", "hub", "where", "reason", box=None)
    for d in dls:
        position = f"p{d.partition}#{d.sequence_number} " if d.partition is not None else ""
        where = position + (d.pointer or "(body)")
        table.add_row(d.received.strftime("%Y-%m-%d %H:%M:%S"), d.hub, where, d.reason)
    out.print(table)
    out.print(f"{len(dls)} dead letter(s)")


@app.command("demo")
def demo_cmd(
    db: DbOption = None,
    samples: Annotated[Path, typer.Option(help="Folder of sample bodies.")] = SAMPLES,
) -> None:
    """Replay the bundled samples on the embedded default and summarize what came out."""
    files = replay.collect([samples])
    with _store(db, must_exist=False) as (cfg, store):
        counts = _replay(cfg, store, files, "demo", False)
        events = store.events()
        dls = store.dead_letters()
    where = _where(cfg)
    _print_counts(counts, len(files), where)
    out.print()
    out.print(f"[bold]What is in {where}[/bold]: {len(events)} events, {len(dls)} dead letters")
    by_source = Counter(e.source.value for e in events)
    out.print("  by source:     " + ", ".join(f"{k} {v}" for k, v in by_source.most_common()))
    alerts = Counter(e.kind for e in events if e.source.value == "defender")
    for kind, n in alerts.most_common(8):
        out.print(f"  alert          {n:>3} × {kind}")
    ai = Counter(x.name or x.resource_id for e in events for x in e.entities_of(AiResource))
    out.print("  AI resources:  " + (", ".join(f"{k} ({v})" for k, v in ai.most_common(5)) or "none"))
    ips = Counter(x.prefix for e in events for x in e.entities_of(Ip))
    out.print("  caller nets:   " + (", ".join(f"{k} ({v})" for k, v in ips.most_common(5)) or "none"))
    users = Counter(x.upn or x.object_id or x.name for e in events for x in e.entities_of(User))
    out.print("  users:         " + (", ".join(f"{k} ({v})" for k, v in users.most_common(4)) or "none"))
    for d in dls[:5]:
        out.print(f"  dead letter:   {d.reason}")
    out.print()
    out.print("Next: .venv/bin/aegis events | .venv/bin/aegis events --json | .venv/bin/aegis deadletters")


def main() -> None:
    try:
        app()
    except AegisError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug: one line unless asked for more
        if os.environ.get("AEGIS_DEBUG"):
            raise
        err.print(f"error: internal error ({type(exc).__name__}); set AEGIS_DEBUG=1 for the traceback", markup=False)
        sys.exit(70)


if __name__ == "__main__":
    main()
