"""`aegis`: the command line. It drives the same `Pipeline` as the Event Hubs triggers.

Every error is one line on stderr and a non-zero exit: 1 for a problem with the input, the
database or a setting; 2 for a wrong option (from click); 70 for a bug (set AEGIS_DEBUG=1 to see
the traceback).
"""

from __future__ import annotations

import base64
import dataclasses
import getpass
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, get_args
from zoneinfo import ZoneInfo

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from aegis import log, settings, tracing
from aegis.errors import AegisError, InputNotFound

if TYPE_CHECKING:  # the heavy parts are imported by the commands that need them: `aegis --help` stays fast
    from aegis.inventory.refresh import Refreshed
    from aegis.pipeline import Counts
    from aegis.records import AuditEntry, Enrichment, Incident, StepRecord, View
    from aegis.store import Store

app = typer.Typer(
    name="aegis",
    help="Aegis: detect and respond to attacks on Azure AI services. It ingests Defender for Cloud AI alerts and "
    "the diagnostic logs of Azure OpenAI and AI Foundry, correlates them into incidents mapped to MITRE ATLAS and "
    "the OWASP LLM Top 10, and runs the response plan's playbooks, disruptive steps only once a person approves.",
    epilog="Exit status: 0 done; 1 a problem with the input, a file, the database or a setting (the message says "
    "which, and how to fix it), or a replay that kept nothing; 2 a wrong command or option; 70 a bug (AEGIS_DEBUG=1 "
    "shows the traceback); 130 interrupted.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="markdown",
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

BATCH = 500
PROGRESS_FROM_BYTES = 2_000_000
SAMPLES = Path(__file__).resolve().parent.parent / "samples"
DEMO_ESTATE = SAMPLES.parent / "demo" / "estate.json"  # the demo's AI estate, as Resource Graph rows
SERVE_PORT = 8765
NAMESPACE = re.compile(
    r"[A-Za-z][A-Za-z0-9-]{4,48}[A-Za-z0-9]\.servicebus\.(windows\.net|usgovcloudapi\.net|chinacloudapi\.cn)"
)
DEMO_DB = Path("aegis-demo.db")  # `aegis demo` starts it afresh each time

DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="SQLite database file [default: $AEGIS_DB or ./aegis.db].", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON array, one object per row.")]
LimitOption = Annotated[int | None, typer.Option("--limit", min=1, help="At most this many rows.")]


class _Options:
    verbose = False


def _version(asked: bool) -> None:
    if asked:
        from aegis import __version__  # noqa: PLC0415

        out.print(f"aegis {__version__} (Python {sys.version.split()[0]})", markup=False)
        raise typer.Exit


@app.callback()
def _global(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each dead letter and batch.")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="Print the version and exit.", callback=_version, is_eager=True)
    ] = False,
) -> None:
    _Options.verbose = verbose


@contextmanager
def _store(db: Path | None, *, must_exist: bool) -> Iterator[tuple[settings.Settings, Store]]:
    from aegis.store import open_store  # noqa: PLC0415

    cfg = settings.load(db=db)
    log.configure(json=cfg.log_format == "json", level=cfg.log_level if _Options.verbose else "ERROR")
    tracing.configure(cfg.trace)  # AEGIS_TRACE=console prints the spans of what the command does
    if must_exist and cfg.store == "sqlite" and not cfg.db.exists():
        raise InputNotFound(f"no database at {cfg.db}: run `aegis replay PATH` or `aegis demo` first, or pass --db")
    store = open_store(cfg)
    try:
        yield cfg, store
    finally:
        store.close()


def _replay(
    cfg: settings.Settings, store: Store, files: list[Path], hub: str, *, per_line: bool, folder: Path | None = None
) -> Counts:
    """The bodies in `files` through the pipeline the Event Hubs triggers run: the response plan (of
    `folder`, or the shipped one) records its steps for the incidents each batch changes."""
    from aegis import replay, runtime  # noqa: PLC0415
    from aegis.pipeline import Counts, Message  # noqa: PLC0415

    pipeline = runtime.build_pipeline(cfg, store, respond=True, folder=folder)
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


def _print_json(doc: object) -> None:
    """`--json` output: indented JSON on stdout, as bytes (no encoding step between orjson and the pipe)."""
    sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")


def _write(path: Path, data: bytes) -> None:
    """An output file the user named: written whole, or an error saying why not."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise AegisError(
            f"cannot write {path}: {exc.strerror or exc} (check the folder exists and is writable)"
        ) from None


def _where(cfg: settings.Settings) -> str:
    return str(cfg.db) if cfg.store == "sqlite" else "Azure Table Storage"


def _print_counts(c: Counts, files: int, cfg: settings.Settings) -> None:
    keep_all = cfg.keep_events == "all"
    out.print(f"Replayed {c.messages} messages from {files} file(s) into {_where(cfg)}")
    rows = [
        ("messages", c.messages, ""),
        ("  with events", c.with_events, ""),
        ("  ignored", c.ignored, "valid, nothing to watch (assessments, secure scores, empty envelopes)"),
        *((f"    items: {name}", n, "") for name, n in sorted(c.ignored_items.items())),
        ("  dead-lettered", c.dead_lettered, "see `aegis deadletters`" if c.dead_lettered else ""),
        (
            "events",
            c.events,
            f"{c.new_events} new, {c.duplicates} duplicates"
            if keep_all
            else f"{c.evidence} kept as incidents' evidence (AEGIS_KEEP_EVENTS=all keeps every event)",
        ),
        ("dead letters", c.dead_letters, f"{c.new_dead_letters} new"),
        ("detection hits", c.matches, f"{c.incident_updates} incident updates; see `aegis incidents`"),
    ]
    if c.late:
        rows.append(("too late", c.late, "older than the allowed lateness: not correlated (AEGIS_LATENESS)"))
    for label, value, note in rows:
        out.print(f"  {label:<16}{value:>7}   {note}".rstrip())
    for detection, n in sorted(c.detection_errors.items()):
        err.print(
            escape(f"detection {detection} failed in {n} batch(es) and changed nothing: {c.error_reasons[detection]}")
        )


@app.command("replay")
def replay_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders of message bodies.", show_default=False)],
    *,
    db: DbOption = None,
    hub: Annotated[str, typer.Option(help="Source hub name recorded on events and dead letters.")] = "replay",
    lines: Annotated[bool, typer.Option("--lines", help="Read .json files as one body per line too.")] = False,
    folder: Annotated[
        Path | None,
        typer.Option("--dir", help="Playbooks folder whose plan records the response [default: playbooks/]."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Process message bodies from files exactly as if they came from Event Hubs: normalized,
    correlated, and the response plan's steps recorded for the incidents (a dry run unless the
    plan says `mode: execute`; nothing runs here: `aegis respond` runs what may run).

    A .json file is one body; a .jsonl or .ndjson file has one body per line. Exit status 1 when
    there were messages and every one was dead-lettered (what went wrong: `aegis deadletters`).
    """
    from aegis import replay  # noqa: PLC0415

    files = replay.collect(paths)
    with _store(db, must_exist=False) as (cfg, store):
        counts = _replay(cfg, store, files, hub, per_line=lines, folder=folder)
    if as_json:
        _print_json({"files": len(files), **dataclasses.asdict(counts)})
    else:
        _print_counts(counts, len(files), cfg)
    if counts.messages and counts.dead_lettered == counts.messages:
        err.print(f"every one of the {counts.messages} message(s) was dead-lettered: nothing was kept "
                  f"(`aegis deadletters{' --db ' + str(db) if db else ''}` says why)", markup=False)  # fmt: skip
        raise typer.Exit(1)


@app.command("purge")
def purge_cmd(
    db: DbOption = None,
    older_than: Annotated[
        str | None,
        typer.Option(help="Age to keep, in ISO 8601 (P30D, PT12H) or seconds [default: $AEGIS_RETENTION, 30 days]."),
    ] = None,
) -> None:
    """Retention: delete the events, dead letters and raw message bodies older than the retention
    (what the daily retention timer does on Azure). Incidents and their response are kept."""
    from datetime import UTC, datetime  # noqa: PLC0415

    keep = settings.load(retention=older_than).retention if older_than else None
    with _store(db, must_exist=True) as (cfg, store):
        cutoff = datetime.now(UTC) - (keep or cfg.retention)
        gone = store.purge(cutoff)
    out.print(f"Purged {gone} record(s) from before {cutoff:%Y-%m-%d %H:%M} UTC from {_where(cfg)}")


@app.command("events")
def events_cmd(db: DbOption = None, as_json: JsonOption = False, limit: LimitOption = None) -> None:
    """List the normalized events, oldest first."""
    with _store(db, must_exist=True) as (_, store):
        events = store.events(limit=limit)
    if as_json:
        _print_json([e.to_dict() for e in events])
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
            _print_json(rows)
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
    estate: Annotated[Path, typer.Option(help="The AI estate: a JSON file of Resource Graph rows.")] = DEMO_ESTATE,
) -> None:
    """Replay the bundled samples on the embedded default and summarize what came out. Without
    --db it starts a fresh ./aegis-demo.db each time, so it never mixes samples into your data."""
    from aegis import replay, runtime  # noqa: PLC0415
    from aegis.events import AiResource, Ip, User  # noqa: PLC0415
    from aegis.records import views  # noqa: PLC0415

    files = replay.collect([samples])
    if db is None:
        db = DEMO_DB
        for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
            path.unlink(missing_ok=True)
    with _store(db, must_exist=False) as (cfg, store):
        # the demo's AI estate (Resource Graph rows), read before the replay so incidents carry its context
        inventory = runtime.refresh_inventory(cfg.model_copy(update={"inventory_file": estate}), store)
        counts = _replay(cfg, store, files, "demo", per_line=False)
        events = store.events()
        dls = store.dead_letters()
        incidents = store.incidents()
        shown = [v for v in views(incidents) if v.status != "superseded"]
        steps = store.steps()
        runtime.enrich_and_deliver(cfg, store, runtime.load_response(cfg))
        top = _most_severe(shown)
        enriched = _enrichment(store, top.id) if top else []
    where = _where(cfg)
    _print_counts(counts, len(files), cfg)
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
    out.print(f"[bold]Incidents[/bold]: {len(shown)} ({len(incidents) - len(shown)} single-alert incidents superseded)")
    _incident_table(shown)
    at = f" --db {where}" if cfg.store == "sqlite" else ""
    _demo_response(shown, steps, at)
    if top is not None:
        _demo_enrichment(top, enriched)
    _demo_inventory(inventory, estate, top)
    out.print()
    out.print(escape(f"Next: .venv/bin/aegis incidents show ID{at} | .venv/bin/aegis approvals list{at} | "
                     f".venv/bin/aegis audit{at} | .venv/bin/aegis inventory findings{at}"))  # fmt: skip
    out.print()
    out.print("[bold]Open the console[/bold] (incidents, timelines, approvals, audit log):")
    out.print(escape(f"  .venv/bin/aegis serve{at} --as you@example.com"))
    out.print(f"  then browse to http://127.0.0.1:{SERVE_PORT}/console (Ctrl-C stops it)")


def _most_severe(shown: list[View]) -> Incident | None:
    from aegis.records import SEVERITY_ORDER  # noqa: PLC0415

    if not shown:
        return None
    return max(shown, key=lambda v: (SEVERITY_ORDER.index(v.incident.severity), v.incident.last_seen)).incident


def _demo_enrichment(top: Incident, kept: list[Enrichment]) -> None:
    """What the enrichers found for the most severe incident."""
    out.print()
    out.print("[bold]Enrichment[/bold] of " + escape(f"{top.id}: " + ", ".join(f"{e.name} {e.status}" for e in kept)))
    for e in kept:
        for net in e.result.get("networks", [])[:2]:
            accounts = ", ".join(f"{a['account'].rsplit('/', 1)[-1]} ({a['requests']})" for a in net["ai_accounts"][:3])
            out.print(escape(f"  network {net['network']}: {net['events']} events, {net['failures']} failed; "
                             f"AI accounts {accounts or '-'}"))  # fmt: skip
        for user in e.result.get("users", [])[:2]:
            out.print(
                escape(f"  user {user['user']}: {user['events']} events from {', '.join(user['networks']) or '-'}")
            )
        for plane in e.result.get("control_plane", [])[:2]:
            ops = [
                o["operation"].split(":")[-1].removeprefix("microsoft.cognitiveservices/") for o in plane["operations"]
            ]
            out.print(escape(f"  control plane of {plane['account'].rsplit('/', 1)[-1]}: {', '.join(ops) or 'none'}"))


def _demo_inventory(done: Refreshed, estate: Path, top: Incident | None) -> None:
    """The AI estate the demo's inventory file describes: its assets, blind spots, and the asset
    context the most severe incident carries."""
    out.print()
    shown = estate.relative_to(Path.cwd()) if estate.is_relative_to(Path.cwd()) else estate
    out.print(f"[bold]AI estate[/bold] ({escape(str(shown))}, Resource Graph rows): {len(done.assets)} "
              f"asset(s), {len(done.open)} blind spot(s)")  # fmt: skip
    for a in done.assets:
        out.print(escape(f"  {a.name}: owner {a.owner or '-'}, criticality {a.criticality or '-'}, "
                         f"{len(a.deployments)} deployment(s), logs to Aegis {_yes(a.monitored)}, "
                         f"keys {'on' if a.local_auth else 'off'}"))  # fmt: skip
    for f in done.open:
        out.print(escape(f"  finding  {f.title}"))
        out.print(escape(f"           fix: {f.fix}"))
    asset = top.attributes.get("asset") if top is not None else None
    if top is not None and isinstance(asset, dict):
        out.print(escape(f"  the top incident's asset: {asset.get('name')} (owner {asset.get('owner', '-')}, "
                         f"criticality {asset.get('criticality', '-')}); why: {top.why or '-'}"))  # fmt: skip


def _demo_response(shown: list[View], steps: list[StepRecord], at: str) -> None:
    """The response plan's steps for the most severe incident, and what approving one would do."""
    from aegis.respond.record import call  # noqa: PLC0415

    out.print()
    waiting = [s for s in steps if s.status == "awaiting_approval"]
    out.print(f"[bold]Response (dry run)[/bold]: {len(steps)} step(s), {len(waiting)} awaiting approval")
    top = _most_severe(shown)
    if top is None:
        return
    for s in [s for s in steps if s.incident == top.id]:
        need = f"{len(s.approvers)}/{s.approvals} approvals" if s.approvals else "automatic"
        if s.corroboration:
            need += f"; {s.corroboration.split(' (')[0]}"
        out.print(escape(f"  {s.status:<18}{s.playbook} / {s.step}: {s.action} on {s.target} ({need})"))
    first = next((s for s in waiting if s.incident == top.id), None)
    if first is not None:
        out.print(escape(f"  approve with:  .venv/bin/aegis approvals approve {first.key} --as you@example.com{at}"))
        out.print(escape(f"  it would call: {call(first.action, first.params)}"))


incidents_app = typer.Typer(help="Correlated AI incidents.", no_args_is_help=False)
app.add_typer(incidents_app, name="incidents")


@incidents_app.callback(invoke_without_command=True)
def incidents_cmd(
    ctx: typer.Context,
    db: DbOption = None,
    as_json: JsonOption = False,
    show_all: Annotated[bool, typer.Option("--all", help="Include superseded single-alert incidents.")] = False,
) -> None:
    """List incidents as the console's queue orders them: open first, then by response tier,
    severity and age, the oldest first (`aegis incidents show ID` for one)."""
    from aegis.approvals.listing import Query, listing  # noqa: PLC0415
    from aegis.records import views  # noqa: PLC0415
    from aegis.respond import playbooks as response  # noqa: PLC0415

    if ctx.invoked_subcommand is not None:
        return
    with _store(db, must_exist=True) as (_, store):
        triages = store.triages()
        listed = listing(views(store.incidents()), Query(superseded=show_all), response.load().plan.tiers,
                         triages).views  # fmt: skip
        steps = store.steps()
        kept = {v.incident.id: _enrichment(store, v.incident.id) for v in listed} if as_json else {}
    if as_json:
        by_incident: dict[str, list[dict[str, object]]] = {}
        for st in steps:
            by_incident.setdefault(st.incident, []).append(
                {
                    "id": st.key,
                    "playbook": st.playbook,
                    "step": st.step,
                    "action": st.action,
                    "target": st.target,
                    "status": st.status,
                }
            )
        rows = [{**v.summary(), "response": by_incident.get(v.incident.id, []),
                 "enrichment": [e.summary() for e in kept[v.incident.id]]} for v in listed]  # fmt: skip
        _print_json(rows)
        return
    _incident_table(listed, {k: t.status for k, t in triages.items()})
    out.print(f"{len(listed)} incident(s)")


def _incident_table(listed: list[View], triaged: dict[str, str] | None = None) -> None:
    for v in listed:
        i = v.incident
        out.print(
            f"  {i.severity.value:<9}{v.status:<11}{(triaged or {}).get(i.id, 'new'):<7}{i.first_seen:%Y-%m-%d %H:%M}  "
            f"{i.title}  [{i.id}]",
            markup=False,
            highlight=False,
        )


@incidents_app.command("show")
def incident_show(
    incident_id: Annotated[str, typer.Argument(help="Incident id.")], db: DbOption = None, as_json: JsonOption = False
) -> None:
    """One incident, readably, with its evidence timeline, triage, enrichment and response."""
    from aegis.correlate import mapping  # noqa: PLC0415
    from aegis.records import alert_details, views  # noqa: PLC0415
    from aegis.respond import planner  # noqa: PLC0415
    from aegis.respond import playbooks as response  # noqa: PLC0415

    with _store(db, must_exist=True) as (_, store):
        found = [v for v in views(store.incidents()) if v.incident.id == incident_id]
        kept = _enrichment(store, incident_id)
        steps = store.steps(incident=incident_id)
        alerts = alert_details(store.evidence(found[0].incident)) if found else []
        triage = store.triage(incident_id)
    if not found:
        raise InputNotFound(f"no incident {incident_id}: `aegis incidents` lists them")
    v = found[0]
    i = v.incident
    if as_json:
        _print_json({**v.summary(), "timeline": [dataclasses.asdict(t) for t in i.timeline],
                     "alerts": [dataclasses.asdict(a) for a in alerts],
                     "triage": triage.summary() if triage else None,
                     "enrichment": [e.summary() for e in kept], "steps": [s.summary() for s in steps]})  # fmt: skip
        return
    plan = response.load()
    atlas, owasp = mapping.atlas_names(), mapping.owasp_names()
    lines = [
        f"{i.title}",
        f"  id          {i.id}",
        f"  detection   {i.detection}",
        f"  group       {i.grouped_on}",
        f"  tenant      {i.tenant or '-'}",
        f"  severity    {i.severity.value}    status {v.status}"
        + (f" (by {v.superseded_by})" if v.superseded_by else ""),
        f"  seen        {i.first_seen:%Y-%m-%d %H:%M:%S} → {i.last_seen:%Y-%m-%d %H:%M:%S} UTC"
        f" ({i.event_count} event(s))",
        f"  why         {i.why or '-'}",
        f"  triage      {triage.status if triage else 'new'}"
        + (f", owner {triage.owner}" if triage and triage.owner else "")
        + (f", {triage.classification}" if triage and triage.classification else "")
        + (f", {len(triage.comments)} comment(s)" if triage and triage.comments else ""),
        "  ATLAS       " + ("; ".join(f"{t} {atlas.get(t, '')}" for t in i.atlas) or "-"),
        "  OWASP LLM   " + ("; ".join(f"{t} {owasp.get(t, '')}" for t in i.owasp_llm) or "-"),
        f"  alerts ({len(alerts)})",
        *[
            line
            for a in alerts
            for line in (
                f"    {a.title or a.kind}  [{a.kind}, {a.severity or '-'}]",
                *([f"      ATT&CK: {', '.join(a.tactics)}"] if a.tactics else []),
                *([f"      {a.description[:300]}"] if a.description else []),
                *([f"      {a.link}"] if a.link else []),
            )
        ],
        "  entities",
        *[f"    {e.type:<17} {e.key}" for e in i.entities],
        f"  timeline ({len(i.timeline)} events)",
        *[
            f"    {t.time:%H:%M:%S}  {t.source:<13} {t.kind}" + (f"  [{t.step}]" if t.step else "")
            for t in i.timeline[:200]
        ],
        f"  enrichment ({len(kept)})",
        *[line for e in kept for line in _enrichment_lines(e)],
        f"  response ({len(steps)} steps)",
        *[f"    {s.status:<18}{s.playbook} / {s.step}: {s.action} on {s.target}" for s in steps],
        f"  recommended next steps (tier: {plan.plan.tiers[i.severity]})",
        *[f"    {b}: {plan.playbooks[b].description.strip()}" for b in planner.playbooks_for(i, plan.plan)],
    ]
    for line in lines:
        out.print(line, markup=False, highlight=False)


@incidents_app.command("triage")
def incident_triage(
    incident_id: Annotated[str, typer.Argument(help="Incident id.")],
    verb: Annotated[str, typer.Argument(help="acknowledge, assign, close, reopen or comment.")],
    *,
    person: Annotated[str, typer.Option("--as", help="Your user principal name (recorded in the audit log).")],
    owner: Annotated[str, typer.Option(help="assign: to whom (a user principal name; default: you).")] = "",
    classification: Annotated[
        str, typer.Option(help="close: true_positive, benign_positive, false_positive or undetermined.")
    ] = "",
    text: Annotated[str, typer.Option(help="comment: its text; close: why; reopen: why.")] = "",
    db: DbOption = None,
) -> None:
    """Triage an incident as the console does: acknowledge it, assign it, close it with a
    classification, reopen it or comment on it; each change is audited under your name."""
    from aegis.approvals.triage import Triager  # noqa: PLC0415

    with _store(db, must_exist=True) as (_, store):
        found = [i for i in store.incidents() if i.id == incident_id]
        if not found:
            raise InputNotFound(f"no incident {incident_id}: `aegis incidents` lists them")
        name = person.strip().lower()
        t = Triager(store).apply(found[0], verb, name, name, owner=owner, classification=classification, text=text)
    said = [t.status, *([f"owner {t.owner}"] if t.owner else []), *([t.classification] if t.classification else [])]
    out.print(f"{incident_id}: {', '.join(said)} (revision {t.revision})", markup=False)


def _enrichment(store: Store, incident: str) -> list[Enrichment]:
    return store.enrichment(incident)


def _enrichment_lines(e: Enrichment) -> list[str]:
    head = f"    {e.name:<14}{e.status:<9}" + (e.error or f"{e.took_ms} ms")
    body = orjson.dumps(e.result, option=orjson.OPT_INDENT_2).decode().splitlines() if e.result else []
    return [head, *[f"      {line}" for line in body[:60]], *(["      …"] if len(body) > 60 else [])]


detections_app = typer.Typer(help="Detections (YAML in detections/).", no_args_is_help=True)
app.add_typer(detections_app, name="detections")
PathsOption = Annotated[
    list[Path] | None, typer.Option("--path", help="Detection files or folders [default: detections/].")
]


@detections_app.command("list")
def detections_list(path: PathsOption = None, as_json: JsonOption = False) -> None:
    """The loaded detections."""
    from aegis.correlate import detections  # noqa: PLC0415

    loaded = detections.load(path).detections
    if as_json:
        _print_json([{"id": d.id, "kind": d.kind, "severity": d.severity.value, "group_by": list(d.group_by),
                      "window_seconds": d.window.total_seconds() if d.window else None,
                      "threshold": d.threshold, "atlas": list(d.atlas),
                      "owasp_llm": list(d.owasp_llm), "sources": sorted(d.sources) if d.sources else None}
                     for d in loaded])  # fmt: skip
        return
    table = Table("id", "kind", "severity", "group by", "ATLAS", "OWASP", box=None)
    table.columns[0].no_wrap = True  # an id is copied whole, never cut or folded
    for d in loaded:
        table.add_row(d.id, d.kind, d.severity.value, ", ".join(d.group_by), ", ".join(d.atlas), ", ".join(d.owasp_llm))
    out.print(table, markup=False)


@detections_app.command("validate")
def detections_validate(path: PathsOption = None) -> None:
    """Load and validate every detection file; the first problem names the file and the field."""
    from aegis.correlate import detections  # noqa: PLC0415

    loaded = detections.load(path)
    out.print(f"{len(loaded.detections)} detection(s) valid")


@detections_app.command("test")
def detections_test(path: PathsOption = None, as_json: JsonOption = False) -> None:
    """Run every detection's own test events against its expected result (exit status 1 if one fails)."""
    from aegis.correlate import detections, selftest  # noqa: PLC0415

    outcomes = [o for d in detections.load(path).detections for o in selftest.run(d)]
    failed = sum(1 for o in outcomes if not o.passed)
    if as_json:
        _print_json([{"detection": o.detection, "test": o.test, "passed": o.passed, "detail": o.detail or None}
                     for o in outcomes])  # fmt: skip
    else:
        for o in outcomes:
            mark = "ok  " if o.passed else "FAIL"
            out.print(f"{mark} {o.detection}: {o.test}" + ("" if o.passed else f" — {o.detail}"), markup=False)
        out.print(f"{len(outcomes) - failed} passed, {failed} failed")
    if failed:
        raise typer.Exit(1)


@detections_app.command("schema")
def detections_schema() -> None:
    """The JSON Schema of detection files (generated from the rule kind registry: each kind's fields)."""
    from aegis.correlate import detections  # noqa: PLC0415

    _print_json(detections.schema())


@detections_app.command("coverage")
def detections_coverage(
    path: PathsOption = None,
    atlas: Annotated[
        Path | None,
        typer.Option("--atlas", help="A full ATLAS release (its ATLAS.yaml) to measure against [default: the "
                     "techniques Aegis ships].", show_default=False),
    ] = None,
    navigator: Annotated[
        Path | None,
        typer.Option("--navigator", help="Also write the coverage as an ATLAS Navigator layer file (JSON).",
                     show_default=False),
    ] = None,
    as_json: JsonOption = False,
) -> None:  # fmt: skip
    """Which ATLAS techniques and OWASP LLM categories the detections (and the alert mapping) cover."""
    from aegis.correlate import coverage, detections  # noqa: PLC0415

    cov = coverage.coverage(detections.load(path).detections)
    data = coverage.atlas_file(atlas) if atlas else coverage.shipped_atlas()
    if navigator:
        _write(navigator, orjson.dumps(coverage.navigator_layer(cov, data), option=orjson.OPT_INDENT_2))
    counts = coverage.counts(cov, data)
    if as_json:
        _print_json({**counts, "atlas_version": data.version, "atlas_source": data.source,
                     "atlas": {t: cov.atlas.get(t, []) for t in data.techniques},
                     "owasp_llm": {i: by for i, _, by in coverage.owasp_rows(cov)}})  # fmt: skip
        return
    scope = "in the full data" if data.complete else "Aegis ships (give --atlas ATLAS.yaml for every gap)"
    out.print(f"ATLAS {data.version}: {counts['atlas_covered']} of the {counts['atlas_techniques']} techniques "
              f"{scope} covered", markup=False)  # fmt: skip
    for column in coverage.matrix(cov, data):
        out.print(f"  {column.name} ({column.covered} of {len(column.cells)})", markup=False)
        for cell in column.cells:
            for c, indent in [(cell, "    "), *((s, "      ") for s in cell.subs)]:
                mark = "covered" if c.by else "-"
                who = f"  ← {', '.join(c.by)}" if c.by else ""
                out.print(f"{indent}{mark:<8} {c.technique.id:<14} {c.technique.name}{who}", markup=False)
    out.print(f"OWASP LLM Top 10: {counts['owasp_covered']} of the {counts['owasp']} covered", markup=False)
    for ident, name, by in coverage.owasp_rows(cov):
        tail = f"  ← {', '.join(by)}" if by else ""
        out.print(f"  {'covered' if by else 'NOT covered':<12} {ident:<6} {name}{tail}", markup=False)
    if navigator:
        err.print(f"ATLAS Navigator layer written to {navigator} (open it at the ATLAS Navigator: Open Existing Layer)")


inventory_app = typer.Typer(help="The AI estate: accounts, projects and hubs, their blind spots, what changed.",
                            no_args_is_help=True)  # fmt: skip
app.add_typer(inventory_app, name="inventory")


@inventory_app.command("refresh")
def inventory_refresh(
    db: DbOption = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Read Resource Graph rows from this JSON file instead of Azure "
                     "[default: AEGIS_INVENTORY_FILE, else Azure with your az login].", show_default=False),
    ] = None,
    as_json: JsonOption = False,
) -> None:  # fmt: skip
    """Read the AI estate (Azure Resource Graph, then each account's deployments, content filters,
    diagnostic settings and its subscription's Defender plan), record what changed since the last
    refresh, and open or close the blind-spot findings."""
    from aegis import runtime  # noqa: PLC0415

    with _store(db, must_exist=False) as (cfg, store):
        read = cfg.model_copy(update={"inventory_file": file}) if file is not None else cfg
        done = runtime.refresh_inventory(read, store)
    if as_json:
        _print_json({"assets": len(done.assets), "open_findings": [orjson.loads(f.to_json()) for f in done.open],
                     "changes": [orjson.loads(c.to_json()) for c in done.changes], "gone": done.gone,
                     "errors": done.errors})  # fmt: skip
        return
    out.print(f"{len(done.assets)} AI asset(s); {len(done.open)} open finding(s); {len(done.changes)} change(s) "
              f"since the last refresh; {len(done.gone)} gone", markup=False)  # fmt: skip
    for c in done.changes:
        out.print(f"  {'WEAKER ' if c.weaker else ''}{c.asset.rsplit('/', 1)[-1]}: {c.what} {c.before} -> {c.after}",
                  markup=False)  # fmt: skip
    for e in done.errors[:20]:
        err.print(f"  could not read: {e}", markup=False)
    out.print("Next: aegis inventory findings | aegis inventory list | aegis inventory changes", markup=False)


@inventory_app.command("list")
def inventory_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """The AI assets of the last refresh: owner, criticality, exposure, monitoring, deployments."""
    with _store(db, must_exist=True) as (_, store):
        found = store.assets()
    if as_json:
        _print_json([orjson.loads(a.to_json()) for a in found])
        return
    if not found:
        out.print("No AI assets: run `aegis inventory refresh` first.", markup=False)
        return
    table = Table("asset", "kind", "owner", "criticality", "public", "keys", "logs to Aegis", "Defender", "deployments",
                  box=None)  # fmt: skip
    for a in found:
        table.add_row(escape(a.name), escape(a.kind or a.type.rsplit("/", 1)[-1]), escape(a.owner or "-"),
                      escape(a.criticality or "-"), _yes(a.public), _yes(a.local_auth), _yes(a.monitored),
                      _yes(a.defender), str(len(a.deployments)))  # fmt: skip
    out.print(table)


@inventory_app.command("changes")
def inventory_changes(
    db: DbOption = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, the newest first.", min=1)] = 50,
    as_json: JsonOption = False,
) -> None:
    """What the refreshes saw change, the newest first: a content filter relaxed, keys turned back
    on, public access opened (each marked WEAKER), a deployment or an asset added or gone."""
    with _store(db, must_exist=True) as (_, store):
        found = store.asset_changes(limit=limit)
    if as_json:
        _print_json([orjson.loads(c.to_json()) for c in found])
        return
    if not found:
        out.print("No change recorded yet: a refresh records what differs from the one before.", markup=False)
    for c in found:
        out.print(f"{c.time:%Y-%m-%d %H:%M} UTC  {'WEAKER ' if c.weaker else ''}{c.asset.rsplit('/', 1)[-1]}: "
                  f"{c.what} {c.before} -> {c.after}", markup=False)  # fmt: skip


def _yes(value: bool | None) -> str:
    return "?" if value is None else "yes" if value else "no"


@inventory_app.command("findings")
def inventory_findings(
    db: DbOption = None,
    closed: Annotated[bool, typer.Option("--all", help="Closed (fixed) findings too.")] = False,
    as_json: JsonOption = False,
) -> None:
    """The blind spots: an AI asset whose logs do not reach Aegis, not covered by Defender for AI,
    accepting keys, open to the internet, or with a weakened content filter; each with its evidence
    and the exact fix. A finding closes itself when a refresh shows it fixed."""
    with _store(db, must_exist=True) as (_, store):
        found = [f for f in store.findings() if closed or f.open]
    if as_json:
        _print_json([orjson.loads(f.to_json()) for f in found])
        return
    if not found:
        out.print("No open findings." + ("" if closed else " (--all shows the closed ones)"), markup=False)
        return
    for f in found:
        state = f"open since {f.opened:%Y-%m-%d %H:%M}" if f.open else f"closed {f.closed:%Y-%m-%d %H:%M}"
        out.print(f"{f.severity.value.upper()}  {f.title}  ({state} UTC; owner {f.owner or 'not tagged'})",
                  markup=False)  # fmt: skip
        for e in f.evidence:
            out.print(f"    evidence: {e}", markup=False)
        out.print(f"    fix: {f.fix}", markup=False)


playbooks_app = typer.Typer(help="Response playbooks and the response plan (YAML in playbooks/).", no_args_is_help=True)
app.add_typer(playbooks_app, name="playbooks")
FolderOption = Annotated[Path | None, typer.Option("--dir", help="Playbooks folder [default: playbooks/].")]


@playbooks_app.command("validate")
def playbooks_validate(folder: FolderOption = None) -> None:
    """Load and validate the response plan and every playbook; the first problem names the file and the field."""
    from aegis.correlate import detections  # noqa: PLC0415
    from aegis.respond import playbooks as response  # noqa: PLC0415

    loaded = response.load(folder, detection_ids=[d.id for d in detections.load().detections])
    steps = sum(len(p.steps) for p in loaded.playbooks.values())
    out.print(f"response plan and {len(loaded.playbooks)} playbook(s) valid ({steps} steps, mode {loaded.plan.mode})")


@playbooks_app.command("list")
def playbooks_list(folder: FolderOption = None, as_json: JsonOption = False) -> None:
    """The playbooks, their steps and the approvals each step needs under the plan."""
    from aegis.respond import playbooks as response  # noqa: PLC0415

    loaded = response.load(folder)
    if as_json:
        _print_json([{"id": b.id, "description": b.description.strip(),
                      "steps": [{"name": st.name, "action": st.action, "for_each": st.for_each,
                                 "approvals": loaded.plan.approvals_for(st.action)} for st in b.steps]}
                     for b in loaded.playbooks.values()])  # fmt: skip
        return
    for book in loaded.playbooks.values():
        out.print(f"[bold]{book.id}[/bold]  {book.description.strip()}")
        for step in book.steps:
            need = loaded.plan.approvals_for(step.action)
            each = f" for each {step.for_each}" if step.for_each else ""
            out.print(f"  {step.action:<22} {need} approval(s)  {step.name}{each}", markup=False)


@playbooks_app.command("actions")
def playbooks_actions() -> None:
    """The registered actions: what each calls, the permission it needs, and how to undo it."""
    from aegis.respond.actions import ACTIONS  # noqa: PLC0415

    for spec in ACTIONS.values():
        undo = f"undo: {spec.inverse}" if spec.inverse else "cannot be undone" if not spec.reversible else ""
        out.print(f"[bold]{spec.name}[/bold]  {spec.summary}")
        out.print(f"  call:       {spec.rest}", markup=False)
        out.print(f"  permission: {spec.permission}", markup=False)
        out.print(f"  {'disruptive' if spec.disruptive else 'not disruptive'}; {undo}", markup=False)


@playbooks_app.command("plan")
def playbooks_plan(
    incident_id: Annotated[str, typer.Argument(help="Incident id (`aegis incidents` lists them).")],
    db: DbOption = None,
    folder: FolderOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """What the response plan would do for an incident: each step, its target and exact parameters,
    the approvals it needs, and what it refuses and why. Runs nothing."""
    from aegis.assets import AssetBook  # noqa: PLC0415
    from aegis.respond import planner  # noqa: PLC0415
    from aegis.respond import playbooks as response  # noqa: PLC0415

    loaded = response.load(folder)
    with _store(db, must_exist=True) as (_, store):
        found = [i for i in store.incidents() if i.id == incident_id]
        if not found:
            raise InputNotFound(f"no incident {incident_id}: `aegis incidents` lists them")
        steps = planner.plan(found[0], loaded, assets=AssetBook(store.assets()), key_callers=store.key_callers)
    if as_json:
        _print_json([dataclasses.asdict(s) for s in steps])
        return
    if not steps:
        out.print(f"No playbook applies to {incident_id} under the response plan.")
    for s in steps:
        need = f"{s.approvals} approval(s)" if s.approvals else "automatic"
        if s.corroboration:
            need += f"; {s.corroboration.split(' (')[0]}"
        line = escape(f"{s.playbook} / {s.step}: {s.action} on {s.target or '?'} ({need})")  # attacker-shaped values
        out.print(f"[bold]{s.status:<17}[/bold] {line}")
        out.print(f"                  params {orjson.dumps(s.params).decode()}", markup=False)
        if s.reason:
            out.print(f"                  refused: {s.reason}", markup=False)


@playbooks_app.command("request")
def playbooks_request(
    incident_id: Annotated[str, typer.Argument(help="Incident id (`aegis incidents` lists them).")],
    playbook: Annotated[str, typer.Argument(help="Playbook id (`aegis playbooks list` shows them).")],
    person: Annotated[str, typer.Option("--as", help="Your user principal name: the requester, who cannot approve.")],
    db: DbOption = None,
    folder: FolderOption = None,
) -> None:
    """Ask for a playbook on an incident: one the plan did not choose, or again after a step of it was
    denied or expired (each such step is proposed again as a new step, linked to the old one in the
    audit log). Its steps wait for approval as the plan says; you cannot approve your own request."""
    from aegis import runtime  # noqa: PLC0415
    from aegis.respond.record import Responder  # noqa: PLC0415

    with _store(db, must_exist=True) as (cfg, store):
        loaded = runtime.load_response(cfg, folder)
        found = [i for i in store.incidents() if i.id == incident_id]
        if not found:
            raise InputNotFound(f"no incident {incident_id}: `aegis incidents` lists them")
        steps = Responder(loaded, store).request(found[0], playbook, person)
    for st in steps:
        again = f" (again, after {st.replaces})" if st.replaces else ""
        out.print(escape(f"{st.status:<17} {st.key}  {st.action} on {st.target}{again}"))


@app.command("respond")
def respond_cmd(db: DbOption = None, folder: FolderOption = None, as_json: JsonOption = False) -> None:
    """Record what the response plan does for every stored incident (idempotent: a step is recorded
    once); in `mode: execute`, run the steps that are approved, expire the ones that waited too long
    and retry the ones a throttled service released."""
    from aegis import runtime  # noqa: PLC0415
    from aegis.records import views  # noqa: PLC0415
    from aegis.respond.execute import Executor  # noqa: PLC0415
    from aegis.respond.record import Responder  # noqa: PLC0415

    with _store(db, must_exist=True) as (cfg, store):
        loaded = runtime.load_response(cfg, folder)
        responder = Responder(loaded, store)
        new = responder.drain()
        incidents = [v.incident for v in views(store.incidents()) if v.status != "superseded"]
        new += responder.respond(incidents)
        runtime.corroborate(cfg, loaded, store, store.incidents)
        ran = Executor.from_settings(loaded, store, cfg).run()
        waiting = store.steps(status=["awaiting_approval"])
    if as_json:
        _print_json({"new_steps": new, "incidents": len(incidents), "awaiting_approval": len(waiting),
                     "mode": loaded.plan.mode, "executed": dataclasses.asdict(ran)})  # fmt: skip
        return
    out.print(f"{new} new step(s) for {len(incidents)} incident(s); {len(waiting)} awaiting approval "
              "(`aegis approvals list`)")  # fmt: skip
    if loaded.plan.mode == "execute":
        out.print("executed: " + ", ".join(f"{k} {v}" for k, v in dataclasses.asdict(ran).items()))


approvals_app = typer.Typer(help="Steps that wait for on-call approval.", no_args_is_help=True)
app.add_typer(approvals_app, name="approvals")
PersonOption = Annotated[str, typer.Option("--as", help="Your user principal name.")]


@approvals_app.command("list")
def approvals_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Steps awaiting approval, with their exact parameters and what approving would do."""
    from aegis.respond.record import call  # noqa: PLC0415

    with _store(db, must_exist=True) as (_, store):
        waiting = store.steps(status=["awaiting_approval"])
    if as_json:
        rows = [{**st.summary(), "would_call": call(st.action, st.params)} for st in waiting]
        _print_json(rows)
        return
    for st in waiting:
        out.print(escape(f"{st.key}  {st.action} on {st.target}  ({len(st.approvers)} of {st.approvals} approvals)"))
        if st.corroboration:
            out.print(escape(f"    evidence: {st.corroboration}"))
        out.print(
            escape(f"    {st.playbook} / {st.step}; incident {st.incident}; expires {st.expires:%Y-%m-%d %H:%M}Z")
        )
        out.print(escape(f"    would call: {call(st.action, st.params)}"))
        out.print(escape(f"    parameters {orjson.dumps(st.params).decode()} (digest {st.digest[:16]})"))
    out.print(f"{len(waiting)} step(s) awaiting approval")


@approvals_app.command("approve")
def approvals_approve(step_id: Annotated[str, typer.Argument(help="Step id.")], person: PersonOption,
                      db: DbOption = None, folder: FolderOption = None) -> None:  # fmt: skip
    """Approve a step (the requester cannot; one person counts once). In `mode: execute` a step with all
    its approvals runs at once, with the playbook's steps after it."""
    from aegis.respond import playbooks as response  # noqa: PLC0415
    from aegis.respond.execute import Executor  # noqa: PLC0415
    from aegis.respond.record import Responder, call  # noqa: PLC0415

    loaded = response.load(folder)
    with _store(db, must_exist=True) as (cfg, store):
        step = Responder(loaded, store).decide(step_id, person, approve=True)
        if step.status == "approved":  # execute mode: the step runs now, with the playbook's steps after it
            Executor.from_settings(loaded, store, cfg).run([step.incident])
            step = store.step(step.key) or step
    out.print(escape(f"{step.action} on {step.target}: {step.status} ({len(step.approvers)} of {step.approvals})"))
    if step.status == "dry_run":
        out.print(escape(f"dry run: would call {call(step.action, step.params)}"))
    elif step.reason:
        out.print(escape(f"{step.status}: {step.reason}"))


@approvals_app.command("deny")
def approvals_deny(step_id: Annotated[str, typer.Argument(help="Step id.")], person: PersonOption,
                   reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")],
                   db: DbOption = None, folder: FolderOption = None) -> None:  # fmt: skip
    """Deny a step; it will not run."""
    from aegis.respond import playbooks as response  # noqa: PLC0415
    from aegis.respond.record import Responder  # noqa: PLC0415

    with _store(db, must_exist=True) as (_, store):
        step = Responder(response.load(folder), store).decide(step_id, person, approve=False, reason=reason)
    out.print(escape(f"{step.action} on {step.target}: denied"))


@app.command("enrich")
def enrich_cmd(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Enrich the incidents that are new or changed since they were last enriched (AEGIS_ENRICHERS:
    `local` on SQLite; `log_analytics`, `defender`, `graph` on Azure), then deliver them (AEGIS_DELIVERERS:
    `sentinel`, `teams`; none by default)."""
    from aegis import runtime  # noqa: PLC0415

    with _store(db, must_exist=True) as (cfg, store):
        enriched, delivered = runtime.enrich_and_deliver(cfg, store, runtime.load_response(cfg))
    if as_json:
        _print_json({"enriched": enriched, "delivered": delivered})
        return
    out.print(
        f"{enriched} incident(s) enriched, {delivered} delivered (`aegis incidents show ID` shows what was found)"
    )


@app.command("send")
def send_cmd(
    namespace: Annotated[str, typer.Option(help="The deployed Event Hubs namespace: NAME.servicebus.windows.net.")],
    paths: Annotated[list[Path] | None, typer.Argument(help="Files or folders of bodies [default: samples/].")] = None,
    defender_hub: Annotated[str, typer.Option(help="Hub for Defender alerts.")] = "defender-alerts",
    diagnostics_hub: Annotated[str, typer.Option(help="Hub for diagnostic-log envelopes.")] = "ai-diagnostics",
) -> None:
    """Post-deploy smoke test: send the bundled samples (or PATHS) to the deployed hubs with your Azure
    login (DefaultAzureCredential; you need Azure Event Hubs Data Sender on the namespace)."""
    from azure.identity import DefaultAzureCredential  # noqa: PLC0415

    from aegis import replay, send  # noqa: PLC0415

    if not re.fullmatch(
        r"[A-Za-z][A-Za-z0-9-]{4,48}[A-Za-z0-9]\.servicebus\.(windows\.net|usgovcloudapi\.net|chinacloudapi\.cn)",
        namespace,
    ):
        raise AegisError(f"--namespace {namespace!r}: give the namespace's host name, NAME.servicebus.windows.net")
    files = replay.collect(paths or [SAMPLES])
    bodies = [m.body for f in files for m in replay.messages(f, "send")]
    sent = send.send(namespace, DefaultAzureCredential(), bodies, send.Hubs(defender_hub, diagnostics_hub))
    out.print(", ".join(f"{n} message(s) to {hub}" for hub, n in sent.items()) + f" on {namespace}")


@app.command("drill")
def drill_cmd(
    local: Annotated[
        bool,
        typer.Option(
            "--local", help="The same stages on the embedded default, with a recorded alert shape (no Azure call)."
        ),
    ] = False,
    db: DbOption = None,
    timeout: Annotated[
        str, typer.Option(help="How long to wait for the stages, in minutes (Defender takes some).")
    ] = "30",
    as_json: Annotated[bool, typer.Option("--json", help="The stages as one JSON object.")] = False,
) -> None:
    """Prove the AI incident response end to end: a test prompt Prompt Shields blocks as a jailbreak,
    Defender's alert on the hub, Aegis's incident, the plan's steps and the Teams card, each with its
    latency. Exit status 1 names the stage that never came."""
    from aegis import drill  # noqa: PLC0415

    if not timeout.isdigit() or not 1 <= int(timeout) <= 240:
        raise AegisError(f"--timeout {timeout!r}: give whole minutes from 1 to 240 (example: --timeout 30)")
    if local:
        if db is None:  # a fresh database each time, as `aegis demo` has
            db = DEMO_DB.with_name("aegis-drill.db")
            for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
                path.unlink(missing_ok=True)
        with _store(db, must_exist=False) as (cfg, _):
            work = lambda: drill.local(cfg, SAMPLES / "defender" / "01-jailbreak-arm.json")  # noqa: E731
            report, failed = _drill(work)
    else:
        cfg = settings.load()
        report, failed = _drill(lambda: drill.deployed(cfg, timeout=timedelta(minutes=int(timeout))))
    if as_json:
        _print_json({**(report.to_dict() if report else {"ok": False}), **({"error": failed} if failed else {})})
    elif report is not None:
        for line in report.lines():
            out.print(line, markup=False)
    if failed:
        out.print(f"drill failed: {failed}", markup=False)
        raise typer.Exit(1)


def _drill(work: Any) -> tuple[Any, str | None]:
    from aegis.drill import DrillFailed  # noqa: PLC0415

    try:
        return work(), None
    except DrillFailed as exc:
        return getattr(exc, "report", None), str(exc)


teams_app = typer.Typer(help="The Teams app of the approvals bot.", no_args_is_help=True)
app.add_typer(teams_app, name="teams")


@teams_app.command("manifest")
def teams_manifest_cmd(
    path: Annotated[Path, typer.Option("--out", help="Where to write the package (a zip).")] = Path("aegis-teams.zip"),
    bot_id: Annotated[
        str | None, typer.Option(help="The Azure Bot's app id [default: AEGIS_BOT_APP_ID; azd output].")
    ] = None,
    console_url: Annotated[str | None, typer.Option(help="The console's URL [default: AEGIS_CONSOLE_URL].")] = None,
) -> None:
    """Write the Teams app package (manifest and icons) a Teams admin uploads to give the on-call
    channel's team the approvals bot."""
    from aegis.approvals import teamsapp  # noqa: PLC0415

    cfg = settings.load()
    bot = bot_id or cfg.bot_app_id
    if not bot or not re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", bot):
        raise AegisError("--bot-id: give the Azure Bot's app id, a GUID (`azd env get-value AEGIS_BOT_APP_ID`)")
    url = console_url or cfg.console_url
    if not url.startswith("https://"):
        raise AegisError(f"--console-url {url!r}: Teams needs the deployed console's https URL (AEGIS_CONSOLE_URL)")
    path.write_bytes(teamsapp.package(bot.lower(), url))
    out.print(f"{path}: upload it in the Teams admin center (Manage apps → Upload), then add the app to the team")


@app.command("serve")
def serve_cmd(
    db: DbOption = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port on 127.0.0.1.")] = SERVE_PORT,
    person: Annotated[
        str | None, typer.Option("--as", help="Who you are in the records [default: your login].")
    ] = None,
    folder: FolderOption = None,
    allow_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allow-host",
            help="Another Host name to answer besides 127.0.0.1, localhost and ::1 (a tunnel's), repeatable.",
        ),
    ] = None,
) -> None:
    """The console and the approvals API on http://127.0.0.1:PORT for you alone: you are the
    approver (the Functions app signs people in with Entra ID instead). In `mode: execute` an
    approved step runs at once, with its playbook's steps after it. Requests naming any other Host
    are refused (400), so a web page cannot reach the console through DNS rebinding."""
    import uvicorn  # noqa: PLC0415  (only this command needs the server)

    from aegis.approvals import web  # noqa: PLC0415
    from aegis.correlate import coverage, detections  # noqa: PLC0415
    from aegis.respond import playbooks as response  # noqa: PLC0415
    from aegis.respond.execute import Executor  # noqa: PLC0415

    loaded = response.load(folder)
    name = (person or getpass.getuser()).strip()
    if not name:
        raise AegisError("say who you are: --as you@example.com")
    with _store(db, must_exist=True) as (cfg, store):
        executor = Executor.from_settings(loaded, store, cfg)

        def run_now(step: StepRecord) -> None:
            executor.run([step.incident])

        zone = ZoneInfo(cfg.display_timezone) if cfg.display_timezone else datetime.now().astimezone().tzinfo or UTC
        atlas = coverage.atlas_file(cfg.atlas_data) if cfg.atlas_data else None
        console = web.Console.over(store, loaded, web.local_identity(name, loaded), after_approval=run_now, zone=zone,
                                   detections=detections.load().detections, atlas=atlas)  # fmt: skip
        err.print(f"Aegis console for {name} on http://127.0.0.1:{port}/console ({_where(cfg)}); Ctrl-C stops it")
        try:
            hosts = [*web.LOOPBACK_HOSTS, *(h.strip().lower() for h in allow_host or [] if h.strip())]
            uvicorn.run(web.create_app(console, allowed_hosts=hosts), host="127.0.0.1", port=port, log_level="warning")
        except SystemExit as exc:  # uvicorn exits when it cannot bind
            raise AegisError(f"cannot serve on 127.0.0.1:{port} (in use?): pick another with --port") from exc


@app.command("audit")
def audit_cmd(db: DbOption = None, as_json: JsonOption = False) -> None:
    """The append-only audit log of the response: every plan, decision and (dry-run) call."""
    with _store(db, must_exist=True) as (_, store):
        entries = store.audit_log()
    if as_json:
        _print_json([a.summary() for a in entries])
        return
    for a in entries:
        out.print(
            escape(f"{a.time:%Y-%m-%d %H:%M:%S}Z  {_actor(a):<24} {a.event:<9} {a.action} on {a.target}: {a.detail}")
        )


def _actor(a: AuditEntry) -> str:
    return "aegis (pipeline)" if a.by_pipeline else f"{a.actor} ({a.actor_id})" if a.actor_id else a.actor


@playbooks_app.command("schema")
def playbooks_schema() -> None:
    """JSON Schemas of playbook and plan files (generated from the action registry: each action's parameters)."""
    from aegis.respond import playbooks as response  # noqa: PLC0415

    _print_json(response.schema())


def _metavars(command: Any) -> Any:
    """Help as command lines write it: `--db PATH`, `PATHS...`, a bare flag. (typer 0.29 prints each
    parameter's Python type instead: `<bool>`, `<list[Path]>`, `{paths}...`.)"""
    from typer.core import TyperArgument, TyperOption  # noqa: PLC0415

    original = TyperOption.display_type_rich

    def option_type(self: TyperOption, ctx: Any) -> str | None:
        return "" if self.is_flag or self.count else self.metavar or original(self, ctx)

    def argument_usage(self: TyperArgument) -> str:
        name = self.metavar or (self.name or "").upper()
        return name if self.required else f"[{name}]"

    TyperOption.display_type_rich = option_type  # type: ignore[method-assign]
    TyperArgument.display_type_rich = lambda self, ctx: ""  # type: ignore[method-assign]  # the name says it
    TyperArgument._usage_display_name = argument_usage  # type: ignore[method-assign]

    def walk(cmd: Any) -> None:
        for param in cmd.params:
            if not isinstance(param, TyperOption | TyperArgument) or param.metavar is not None:
                continue
            desc = param.type_descriptor
            if desc.is_choice:
                continue  # shown as its choices: json|text
            annotation = get_args(desc.annotation)[0] if desc.is_list else desc.annotation
            kind = {bool: "", Path: "PATH", int: "INTEGER", float: "NUMBER"}.get(annotation, "TEXT")
            if isinstance(param, TyperArgument) and param.name:
                kind = param.name.upper()
            param.metavar = kind + ("..." if param.nargs != 1 and kind else "")
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(command)
    return command


def main() -> None:
    try:
        _metavars(typer.main.get_command(app))(prog_name="aegis")
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
