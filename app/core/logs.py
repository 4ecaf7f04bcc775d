"""Logging for the server: one configuration that uvicorn applies in its own process and again in every worker."""

from __future__ import annotations

import copy
from typing import Any

from uvicorn.config import LOGGING_CONFIG

FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration plus the root logger at `level`. Worker processes are started afresh and
    configure logging from this dictionary alone: without the root logger here, the service's own lines (the
    console mailer's links among them) would reach no handler in a worker."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["service"] = {"format": FORMAT}
    config["handlers"]["service"] = {
        "class": "logging.StreamHandler",
        "formatter": "service",
        "stream": "ext://sys.stderr",
    }
    config["root"] = {"handlers": ["service"], "level": level.upper()}
    # Alembic announces each of its plugins at INFO on every start: keep its migration lines, not those.
    config["loggers"]["alembic.runtime.plugins"] = {"level": "WARNING"}
    return config
