"""Triage: what an analyst does with an incident — acknowledge it, assign it, close it with a
classification (as Microsoft Sentinel classifies), reopen it, comment on it. Each change is a new
revision of the incident's `Triage` record, written with its audit entry (who by name and object
id, what, the detail) only over the revision the analyst saw: two people acting on one incident
at once never overwrite each other silently.

The console's forms and `aegis incidents triage` both come here. The correlator never reads this
record: an incident that grows after it was closed stays closed until someone reopens it (the
list shows its new evidence all the same).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

from aegis.errors import AegisError
from aegis.records import CLASSIFICATIONS, MAX_COMMENT, MAX_COMMENTS, AuditEntry, Comment, Incident, Triage
from aegis.store import Store

VERBS = ("acknowledge", "assign", "close", "reopen", "comment")
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2064\ufeff]")  # not \n
_OWNER = re.compile(r"^[\w.+'-]+(@[\w-]+(\.[\w-]+)+)?$")


class TriageRefused(AegisError):
    """The change cannot be made as asked (the message says why and what to do)."""


class Triager:
    def __init__(self, store: Store, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store, self.clock = store, clock

    def current(self, incident: str) -> Triage:
        return self.store.triage(incident) or Triage(incident)

    def apply(
        self, incident: Incident, verb: str, who: str, who_id: str | None = None, *, seen: int | None = None,
        owner: str = "", classification: str = "", text: str = "",
    ) -> Triage:  # fmt: skip
        """Make the change; `seen`: the revision the person acted on (None: whatever is current)."""
        now = self.clock()
        before = self.current(incident.id)
        if seen is not None and seen != before.revision:
            raise TriageRefused(
                f"the incident's triage changed since you read it (revision {seen}, now {before.revision}"
                f"{', by ' + before.owner if before.owner else ''}): reload it and try again"
            )
        after, event, detail = self._change(before, verb, who, who_id, now, owner=owner,
                                            classification=classification, text=text)  # fmt: skip
        audit = AuditEntry(now, who, event, "", "triage", incident.id, detail, actor_id=who_id)
        if not self.store.save_triage(after, audit=[audit]):
            raise TriageRefused("someone changed the incident's triage at the same moment: reload it and try again")
        return after

    def _change(
        self, t: Triage, verb: str, who: str, who_id: str | None, now: datetime, *, owner: str, classification: str,
        text: str,
    ) -> tuple[Triage, str, str]:  # fmt: skip
        if verb == "acknowledge":
            if t.status == "closed":
                raise TriageRefused("the incident is closed: reopen it first")
            mine = t.owner is None
            return (t.next(now, status="active", **({"owner": who, "owner_id": who_id} if mine else {})),
                    "acknowledged", f"owner {who}" if mine else f"owned by {t.owner}")  # fmt: skip
        if verb == "assign":
            name = _clean(owner, 256).strip().lower() or who
            if not _OWNER.match(name):
                raise TriageRefused(f"assign to a user principal name such as oncall@contoso.com, not {name!r}")
            ident = who_id if name == who else None
            status = "active" if t.status == "new" else t.status
            return t.next(now, owner=name, owner_id=ident, status=status), "assigned", f"to {name}"
        if verb == "close":
            if classification not in CLASSIFICATIONS:
                raise TriageRefused(f"closing needs a classification: one of {', '.join(CLASSIFICATIONS)}")
            reason = _clean(text, MAX_COMMENT).strip()
            if classification == "false_positive" and not reason:
                raise TriageRefused("say why it is a false positive (the detection's owner reads it)")
            return (t.next(now, status="closed", classification=classification, reason=reason),
                    "closed", f"{classification}{': ' + reason if reason else ''}")  # fmt: skip
        if verb == "reopen":
            if t.status != "closed":
                raise TriageRefused("the incident is not closed")
            return t.next(now, status="active", classification=None, reason=""), "reopened", _clean(text, 500)
        if verb == "comment":
            body = _clean(text, MAX_COMMENT).strip()
            if not body:
                raise TriageRefused("the comment is empty")
            if len(t.comments) >= MAX_COMMENTS:
                raise TriageRefused(f"the incident holds {MAX_COMMENTS} comments, the most it keeps: close it or "
                                    "open a ticket for the discussion")  # fmt: skip
            comment = Comment(now, who, body, who_id)
            return t.next(now, comments=(*t.comments, comment)), "commented", body[:200]
        raise TriageRefused(f"unknown triage action {verb!r}: one of {', '.join(VERBS)}")


def _clean(text: str, limit: int) -> str:
    return _CONTROL.sub("", text)[:limit]
