"""`contacts-api`: serve the API, apply migrations, create administrators."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import tempfile
from typing import Annotated

import typer

from app.core.config import get_settings

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
    workers: Annotated[int, typer.Option(min=1, help="Worker processes")] = 1,
    migrate_first: Annotated[bool, typer.Option("--migrate/--no-migrate", help="Apply migrations first")] = True,
) -> None:
    """Run the API server (uvicorn). With no configuration: SQLite file ./contacts.db and an in-process cache."""
    import uvicorn

    settings = get_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
