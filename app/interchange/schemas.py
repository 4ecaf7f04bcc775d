"""What imports and exports speak: the import report, and the choices of an export."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

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
