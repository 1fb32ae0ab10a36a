"""The PostgreSQL the tests use: ``TETHER_TEST_POSTGRES_URL`` (``scripts/postgres start``
prints it; ``scripts/test`` exports it), and a fresh schema per test."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable

import pytest


def postgres_url() -> str:
    """The test cluster's URL; without one the test fails loudly (never skips)."""
    url = os.environ.get("TETHER_TEST_POSTGRES_URL")
    if not url:
        pytest.fail(
            "the PostgreSQL tests need TETHER_TEST_POSTGRES_URL: run them through scripts/test, or "
            "export TETHER_TEST_POSTGRES_URL=$(scripts/postgres start)",
            pytrace=False,
        )
    return url


def fresh_schema(url: str) -> tuple[str, Callable[[], None]]:
    """A new empty schema on ``url``'s database: a URL whose connections use it, and a function
    dropping it. Each test gets its own, so tests never see each other's rows."""
    import psycopg

    name = "t_" + secrets.token_hex(6)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    joiner = "&" if "?" in url else "?"

    def drop() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")

    return f"{url}{joiner}options=-csearch_path%3D{name}", drop
