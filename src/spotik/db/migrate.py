"""Run the Alembic migrations programmatically (``spotik migrate``, start-up of ``spotik serve``, tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from spotik.settings import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["settings"] = settings
    return config


@dataclass(frozen=True)
class MigrationReport:
    applied: list[str]
    adopted_laravel_schema: bool

    def describe(self) -> str:
        if not self.applied:
            return "database is up to date"
        adopted = "adopted the existing Laravel schema; " if self.adopted_laravel_schema else ""
        return f"{adopted}applied {', '.join(self.applied)}"


def migrate(settings: Settings, revision: str = "head") -> MigrationReport:
    """Bring the database to ``revision`` and say what was done."""
    database = make_url(settings.sqlalchemy_url).database
    if settings.is_sqlite and database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    config = alembic_config(settings)
    command.upgrade(config, revision)
    return MigrationReport(
        applied=list(config.attributes.get("applied", [])),
        adopted_laravel_schema=bool(config.attributes.get("adopted_laravel_schema")),
    )
