"""The errors of imports and exports, each with its code (listed in docs/errors.md)."""

from __future__ import annotations

from app.core.errors import AppError


class ImportNotRecognised(AppError):
    """The file is neither a vCard nor a CSV file; nothing was imported."""

    code = "ImportNotRecognised"
    status_code = 415


class ImportLayoutUnknown(AppError):
    """The CSV header is neither Google's nor Outlook's layout; send a column mapping (`mapping`) with the file."""

    code = "ImportLayoutUnknown"
    status_code = 415


class ImportTooLarge(AppError):
    """The file is larger than an import takes; nothing was imported."""

    code = "ImportTooLarge"
    status_code = 413


class ImportMappingInvalid(AppError):
    """The column mapping is not a JSON object of column names to contact fields."""

    code = "ImportMappingInvalid"
    status_code = 400
