"""Likely duplicates and their merge. Found in one pass over the book, hashing each contact's keys (every email
ignoring case, every phone's E.164 form, the normalised full name) and joining contacts that share one (union-find):
no pair of contacts is ever compared, so 100,000 contacts take about as long as reading them. A merge keeps every
email, phone, address, url and label once on the primary contact and moves the others to the trash, whence they
can be restored to undo it."""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.contacts import import_service as contacts
from app.contacts import service as contacts_service
from app.contacts.models import Contact
from app.core.schemas import MAX_ID
from app.interchange.schemas import DuplicateGroup, DuplicateList, DuplicateReason, MergeResult

# How sure a shared key makes us (more than one kind of shared key adds to it).
SCORES = {"email": 0.9, "phone": 0.8, "name": 0.5}
NOTES_LIMIT = 2000
_NOT_WORD = re.compile(r"[^\w]+")


def normalised_name(*parts: str | None) -> str:
    """Accents, case, punctuation and spacing removed: `José  O'Neil` and `jose oneil` are one name."""
    text = " ".join(part for part in parts if part)
    folded = unicodedata.normalize("NFKD", text.casefold())
    letters = "".join(char for char in folded if not unicodedata.combining(char))
    return " ".join(_NOT_WORD.sub(" ", letters.replace("'", "")).split())


class _Groups:
    """Union-find over contact ids."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, item: int) -> int:
        root = self.parent.setdefault(item, item)
        while root != self.parent[root]:
            root = self.parent[root]
        while item != root:
            item, self.parent[item] = self.parent[item], root
        return root

    def join(self, items: list[int]) -> None:
        first = self.find(items[0])
        for item in items[1:]:
            other = self.find(item)
            if other != first:
                self.parent[max(first, other)] = min(first, other)
                first = min(first, other)


async def find_duplicates(db: AsyncSession, user_id: int, limit: int) -> DuplicateList:
    """Groups of the user's live contacts sharing an email, a phone (E.164) or a full name, surest first."""
    keys: dict[tuple[str, str], list[int]] = defaultdict(list)
    for contact_id, first, middle, last, emails, phones in await contacts.duplicate_keys(db, user_id):
        for entry in emails or []:
            keys[("email", str(entry["value"]).lower())].append(contact_id)
        for entry in phones or []:
            if entry.get("e164"):
                keys[("phone", str(entry["e164"]))].append(contact_id)
        name = normalised_name(first, middle, last)
        if len(name) >= 2:
            keys[("name", name)].append(contact_id)
    groups = _Groups()
    shared = {key: sorted(set(ids)) for key, ids in keys.items() if len(set(ids)) > 1}
    for ids in shared.values():
        groups.join(ids)
    members: dict[int, set[int]] = defaultdict(set)
    reasons: dict[int, list[DuplicateReason]] = defaultdict(list)
    for (kind, value), ids in shared.items():
        root = groups.find(ids[0])
        members[root].update(ids)
        reasons[root].append(DuplicateReason.model_validate({"kind": kind, "value": value, "ids": ids}))
    found = []
    for root, group in members.items():
        kinds = {reason.kind for reason in reasons[root]}
        score = min(1.0, max(SCORES[kind] for kind in kinds) + 0.05 * (len(kinds) - 1))
        ordered = sorted(reasons[root], key=lambda reason: (-SCORES[reason.kind], reason.value))
        found.append(DuplicateGroup(ids=sorted(group), score=round(score, 2), reasons=ordered))
    found.sort(key=lambda group: (-group.score, group.ids[0]))
    return DuplicateList(groups=found[:limit], total=len(found))


def _union(entries: list[list[dict[str, Any]]], key: Any) -> list[dict[str, Any]]:
    kept: dict[Any, dict[str, Any]] = {}
    for entry in (entry for group in entries for entry in group):
        kept.setdefault(key(entry), dict(entry))
    merged = list(kept.values())
    for n, entry in enumerate(merged):
        if "primary" in entry:
            entry["primary"] = n == 0
    return merged


def _merged_fields(primary: Contact, others: list[Contact]) -> dict[str, Any]:
    everyone = [primary, *others]
    fields: dict[str, Any] = {}
    for name in ("first_name", "middle_name", "last_name", "prefix", "suffix", "nickname", "organization"):
        fields[name] = next((getattr(c, name) for c in everyone if getattr(c, name)), None)
    fields["job_title"] = next((c.job_title for c in everyone if c.job_title), None)
    fields["birthday"] = next((c.birthday for c in everyone if c.birthday), None)
    fields["anniversary"] = next((c.anniversary for c in everyone if c.anniversary), None)
    notes = list(dict.fromkeys(c.notes for c in everyone if c.notes))
    fields["notes"] = "\n\n".join(notes)[:NOTES_LIMIT] or None
    fields["emails"] = _union([c.emails or [] for c in everyone], lambda e: str(e["value"]).lower())
    fields["phones"] = _union(
        [[{k: v for k, v in e.items() if k != "e164"} for e in c.phones or []] for c in everyone],
        lambda e: str(e["value"]),
    )
    address_parts = ("street", "locality", "region", "postal_code", "country")
    fields["addresses"] = _union(
        [c.addresses or [] for c in everyone], lambda a: tuple(str(a.get(p) or "").lower() for p in address_parts)
    )
    fields["urls"] = _union([c.urls or [] for c in everyone], lambda u: str(u["value"]))
    fields["labels"] = list(dict.fromkeys(label for c in everyone for label in c.labels or []))
    fields["favorite"] = any(c.favorite for c in everyone)
    return fields


def _merged_extra(everyone: list[Contact]) -> Any:
    lines = [line for c in everyone if isinstance(c.vcard_extra, dict) for line in c.vcard_extra.get("lines", [])]
    base = next((c.vcard_extra for c in everyone if c.vcard_extra), None)
    if not isinstance(base, dict):
        return base
    return {**base, "lines": list(dict.fromkeys(lines))}


async def merge_contacts(
    db: AsyncSession, user_id: int, ids: list[int], primary_id: int, *, fallback_region: str | None
) -> MergeResult:
    """Merge `ids` into `primary_id` (which counts as one of them): the primary keeps its own values and takes the
    others' where it has none; every list entry and label is kept once; notes are joined. The others go to the
    trash (restore them to undo). ContactNotFound if any id is not a live contact of the user."""
    if max(primary_id, *ids) > MAX_ID:
        raise contacts_service.ContactNotFound
    region = await contacts.lock_address_book(db, user_id) or fallback_region
    other_ids = [contact_id for contact_id in dict.fromkeys(ids) if contact_id != primary_id]
    primary, *others = await contacts.live_contacts(db, user_id, [primary_id, *other_ids])
    fields = _merged_fields(primary, others)
    extra = _merged_extra([primary, *others])
    for other in others:
        await contacts_service.delete_contact(db, other.id, user_id)
    await contacts.update_imported(db, primary, fields, extra=extra, region=region)
    return MergeResult(contact=contacts_service.contact_json(primary), trashed=other_ids)
