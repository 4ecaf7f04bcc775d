"""The one table, as Markdown (readable in a terminal, pasteable into bench/README.md)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.measure import Measured

HEADERS = (
    "#",
    "scenario",
    "variant",
    "W",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "DB q/req",
    "Redis rt/req",
    "ratios and notes",
)


@dataclass
class Row:
    scenario: str
    title: str
    variant: str
    workers: str
    rps: str = ""
    p50: str = ""
    p99: str = ""
    errors: str = ""
    db: str = ""
    redis: str = ""
    ratio: str = ""

    def cells(self) -> tuple[str, ...]:
        return (
            self.scenario,
            self.title,
            self.variant,
            self.workers,
            self.rps,
            self.p50,
            self.p99,
            self.errors,
            self.db,
            self.redis,
            self.ratio,
        )


def fmt(value: float | None, digits: int = 2) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}"


def fmt_ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def measured_row(
    scenario: str, title: str, variant: str, workers: int, m: Measured, ratio: str = "", errors_note: str = ""
) -> Row:
    return Row(
        scenario=scenario,
        title=title,
        variant=variant,
        workers=str(workers),
        rps=f"{m.rps:,.0f}",
        p50=fmt_ms(m.p50) if m.requests else "none done",
        p99=fmt_ms(m.p99) if m.requests else "none done",
        errors=f"{m.errors}{errors_note}",
        db=fmt(m.per_request("db")),
        redis=fmt(m.per_request("redis")),
        ratio="; ".join(part for part in (ratio, m.error_note()) if part),
    )


def render(rows: list[Row]) -> str:
    table = [HEADERS, *(row.cells() for row in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS))]
    numeric = {4, 5, 6, 7, 8, 9}

    def line(cells: tuple[str, ...]) -> str:
        parts = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "| " + " | ".join(parts) + " |"

    separator = "|" + "|".join(("-" * (w + 1) + ":") if i in numeric else "-" * (w + 2) for i, w in enumerate(widths))
    return "\n".join([line(HEADERS), separator + "|", *(line(row.cells()) for row in rows)])
