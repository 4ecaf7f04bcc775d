"""What imports and exports speak: the import report, and the choices of an export."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.contacts.schemas import ContactRead
from app.core.schemas import StrictModel

ExportFormat = Literal["vcard", "csv"]
ExportVersion = Literal["4.0", "3.0"]
ImportMode = Literal["merge", "replace", "skip"]
MAX_REFUSALS_LISTED = 1000


class Refusal(BaseModel):
    position: int = Field(ge=0, description="The record's place in the file: the card's number, or the CSV row's")
    reason: str


class ImportReport(BaseModel):
    """What an import did, record by record: `created`, `updated` (a match changed), `unchanged` (a match already
    held the record), `skipped` (a match left alone under `mode=skip`), and each `refused` record with its
    position and reason (the first 1000 listed; `refused_count` counts them all)."""

    format: ExportFormat
    layout: str | None = Field(default=None, description="The CSV layout read: google, outlook or mapping")
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    refused_count: int = 0
    refused: list[Refusal] = Field(default_factory=list)

    def refuse(self, position: int, reason: str) -> None:
        self.refused_count += 1
        if len(self.refused) < MAX_REFUSALS_LISTED:
            self.refused.append(Refusal(position=position, reason=reason))


class DuplicateReason(BaseModel):
    kind: Literal["email", "phone", "name"] = Field(description="What the contacts share")
    value: str = Field(description="The shared email (lower-cased), phone (E.164) or normalised full name")
    ids: list[int] = Field(description="The contacts that share it")


class DuplicateGroup(BaseModel):
    """Contacts that are likely one person: joined by every key two of them share."""

    ids: list[int]
    score: float = Field(ge=0, le=1, description="How likely: 0.9 a shared email, 0.8 a phone, 0.5 a name only")
    reasons: list[DuplicateReason]


class DuplicateList(BaseModel):
    groups: list[DuplicateGroup]
    total: int = Field(ge=0, description="How many groups there are (`groups` lists the first `limit`)")


class MergeRequest(StrictModel):
    """The contacts to merge into `primary` (which is kept, and counts as one of them whether listed or not)."""

    # No upper bound in the schema: an id beyond any stored one is simply not one of yours (404).
    ids: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, max_length=50)
    primary: int = Field(ge=1)

    model_config = ConfigDict(json_schema_extra={"examples": [{"ids": [12, 31], "primary": 12}]})


class MergeResult(BaseModel):
    """The merged contact, and the ids moved to the trash (restore them to undo the merge)."""

    contact: ContactRead
    trashed: list[int]


class ImportProgress(BaseModel):
    bytes_total: int = Field(ge=0)
    bytes_read: int = Field(ge=0, description="How much of the file the committed records came from")
    records: int = Field(ge=0, description="The position of the last record whose work is committed")


class ImportJobRead(BaseModel):
    """A background import: `pending`, `running`, `done` (with its report) or `failed` (with its error; what was
    committed before stays, and running it again matches every record again)."""

    id: str
    status: Literal["pending", "running", "done", "failed"]
    progress: ImportProgress
    report: ImportReport | None
    error: str | None
    attempts: int = Field(ge=0)
    created_at: datetime
    finished_at: datetime | None
