"""`contacts-api`: serve the API, apply migrations, create administrators."""

from __future__ import annotations

import asyncio
import logging
import logging.config
import os
import shutil
import sys
import tempfile
from typing import Annotated

import typer

from app.core.config import MIN_JWT_SECRET_LENGTH, get_settings, is_loopback

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


def main() -> None:
    cli()
