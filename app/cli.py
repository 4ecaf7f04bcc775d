"""`contacts-api`: serve the API, apply migrations, create administrators, import and export a user's contacts."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import os
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from app.core.config import MIN_JWT_SECRET_LENGTH, get_settings, is_loopback

if TYPE_CHECKING:
    from app.interchange.schemas import ExportFormat, ExportVersion

cli = typer.Typer(help="The Contacts API.", no_args_is_help=True, add_completion=False)


async def _migrate() -> None:
    from app.core.db import create_engine
    from app.core.migrations import upgrade_to_head

    engine = create_engine(get_settings())
    try:
        await upgrade_to_head(engine)
    finally:
        await engine.dispose()


@cli.command()
def migrate() -> None:
    """Bring the database schema to the newest migration."""
    asyncio.run(_migrate())
    typer.echo("database is at the newest migration")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind")] = 8000,
    workers: Annotated[int, typer.Option(min=1, envvar="WEB_CONCURRENCY", help="Worker processes")] = 1,
    migrate_first: Annotated[bool, typer.Option("--migrate/--no-migrate", help="Apply migrations first")] = True,
) -> None:
    """Run the API server (uvicorn). With no configuration: SQLite file ./contacts.db and an in-process cache."""
    import uvicorn

    from app.core.logs import log_config

    # The workers read their settings from the environment again: tell them how many they are (uvicorn's own
    # variable), so that without Redis they run without the per-process cache (Settings.cache_off_reason).
    os.environ["WEB_CONCURRENCY"] = str(workers)
    get_settings.cache_clear()
    settings = get_settings()
    if not is_loopback(host) and settings.weak_jwt_secret:
        # Anyone who can reach the service could sign an administrator's token with a published secret.
        typer.echo(
            f"refusing to serve on {host}: JWT_SECRET is short or a published example value; set it to "
            f"{MIN_JWT_SECRET_LENGTH} or more random characters (or leave it unset to generate one)",
            err=True,
        )
        raise typer.Exit(2)
    logging_config = log_config(settings.log_level)
    logging.config.dictConfig(logging_config)
    if settings.cache_off_reason and settings.cache_enabled:
        logging.getLogger("app.cli").warning("cache off: %s", settings.cache_off_reason)
    if migrate_first:
        asyncio.run(_migrate())
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="contacts-api-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            loop="uvloop",
            http="httptools",
            # The client address is the socket's; trusted proxies are handled by the app (TRUSTED_PROXIES).
            proxy_headers=False,
            server_header=False,
            log_config=logging_config,
            log_level=settings.log_level.lower(),
            access_log=False,
        )
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


async def _create_admin(email: str, password: str) -> str:
    from app.core.cache import cache
    from app.core.db import Database, commit
    from app.users import service as users_service
    from app.users.models import Role

    settings = get_settings()
    cache.configure(settings)
    database = Database.from_settings(settings)
    try:
        async with database.sessionmaker() as session:
            user = await users_service.get_user_by_email(session, email)
            if user is None:
                user = await users_service.register_user(session, settings, email, password)
                await users_service.update_user(session, user, role=Role.admin, is_verified=True)
                outcome = "created"
            else:
                await users_service.update_user(session, user, role=Role.admin)
                outcome = "promoted"
            await commit(session)
        return outcome
    finally:
        await cache.close()
        await database.dispose()


@cli.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Argument(help="The administrator's email")],
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the password from stdin")] = False,
) -> None:
    """Create an administrator, or promote an existing user (whose password is then left unchanged)."""
    from pydantic import TypeAdapter, ValidationError

    from app.core.schemas import Email, Password

    try:
        email = TypeAdapter(Email).validate_python(email).lower()
    except ValidationError as exc:
        raise typer.BadParameter("not a valid email address") from exc
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        TypeAdapter(Password).validate_python(password)
    except ValidationError as exc:
        raise typer.BadParameter("the password must be 8 to 1024 bytes") from exc
    outcome = asyncio.run(_create_admin(email, password))
    typer.echo(f"{email}: administrator {outcome}")


async def _user_id(session: Any, email: str) -> int:
    from app.users import service as users_service

    user = await users_service.get_user_by_email(session, email.lower())
    if user is None:
        typer.echo(f"no user with the email {email}", err=True)
        raise typer.Exit(2)
    return int(user.id)


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    # On stderr: stdout carries the report (JSON), which scripts read.
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


async def _import(path: Path, size: int, email: str, mode: str, mapping: str | None) -> dict[str, Any]:
    from app.core.cache import cache
    from app.core.db import Database, commit
    from app.interchange import importing

    settings = get_settings()
    if size > settings.import_max_bytes:
        raise importing.too_large(size, settings.import_max_bytes)
    columns = importing.parse_mapping(mapping)
    cache.configure(settings)
    database = Database.from_settings(settings)
    try:
        async with database.sessionmaker() as session:
            user_id = await _user_id(session, email)
            with _progress() as progress, path.open("rb") as file:
                task = progress.add_task(f"importing {path.name}", total=size)

                async def chunks() -> AsyncIterator[bytes]:
                    while chunk := await asyncio.to_thread(file.read, 256 * 1024):
                        yield chunk
                        progress.advance(task, len(chunk))

                report = await importing.import_stream(
                    session,
                    user_id,
                    chunks(),
                    mode=mode,  # type: ignore[arg-type]
                    mapping=columns,
                    filename=path.name,
                    max_record=settings.import_max_record_bytes,
                    fallback_region=settings.default_phone_region,
                )
            await commit(session)
        return report.model_dump(mode="json")
    finally:
        await cache.close()
        await database.dispose()


@cli.command("import")
def import_file(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A .vcf or .csv file")],
    user: Annotated[str, typer.Option("--user", help="The email of the user whose book it goes into")],
    mode: Annotated[str, typer.Option(help="What a matching record does: merge, replace or skip")] = "merge",
    mapping: Annotated[str | None, typer.Option(help="A CSV in another layout: JSON of column to field")] = None,
) -> None:
    """Import a vCard or CSV file into a user's contacts (as POST /contacts/import does, up to IMPORT_MAX_BYTES,
    in one transaction) and print the report."""
    from app.core.errors import AppError

    if mode not in ("merge", "replace", "skip"):
        raise typer.BadParameter("mode is merge, replace or skip")
    try:
        report = asyncio.run(_import(path, path.stat().st_size, user, mode, mapping))
    except AppError as exc:
        typer.echo(f"{exc.code}: {exc.detail}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(report, indent=2, ensure_ascii=False))


async def _export(email: str, export_format: str, version: str, output: Path, label: str | None) -> int:
    from app.contacts import import_service
    from app.core.db import Database
    from app.interchange import exporting

    settings = get_settings()
    database = Database.from_settings(settings)
    written = 0
    try:
        async with database.sessionmaker() as session:
            user_id = await _user_id(session, email)
            total = await import_service.count_of_user(session, user_id)
        with _progress() as progress, output.open("wb") as file:
            task = progress.add_task(f"exporting to {output.name}", total=None if label else total)

            def advance(count: int) -> None:
                nonlocal written
                written += count
                progress.advance(task, count)

            stream = exporting.export_stream(
                database.sessionmaker,
                user_id,
                cast("ExportFormat", export_format),
                version=cast("ExportVersion", version),
                label=label,
                progress=advance,
            )
            async for chunk in stream:
                await asyncio.to_thread(file.write, chunk)
        return written
    finally:
        await database.dispose()


@cli.command("export")
def export_file(
    user: Annotated[str, typer.Option("--user", help="The email of the user whose book is exported")],
    export_format: Annotated[str, typer.Option("--format", help="vcard or csv (Google's layout)")] = "vcard",
    output: Annotated[Path, typer.Option("-o", "--output", dir_okay=False, help="The file to write")] = Path(
        "contacts.vcf"
    ),
    version: Annotated[str, typer.Option(help="The vCard version: 4.0 or 3.0")] = "4.0",
    label: Annotated[str | None, typer.Option(help="Only the contacts carrying this label")] = None,
) -> None:
    """Export a user's contacts (trash excluded) as vCard or CSV, as GET /contacts/export does."""
    if export_format not in ("vcard", "csv"):
        raise typer.BadParameter("format is vcard or csv")
    if version not in ("4.0", "3.0"):
        raise typer.BadParameter("version is 4.0 or 3.0")
    count = asyncio.run(_export(user, export_format, version, output, label))
    typer.echo(f"{count} contacts written to {output}")


def main() -> None:
    cli()
