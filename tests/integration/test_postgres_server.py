"""The `postgres` fixture (tests/postgres.py): a working PostgreSQL of its own, on 127.0.0.1 only."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from postgres import Postgres
from sqlalchemy import Engine, create_engine, text


@pytest.fixture
def engine(postgres: Postgres) -> Iterator[Engine]:
    engine = create_engine(postgres.url)
    yield engine
    engine.dispose()


def test_a_table_written_in_a_transaction_reads_back(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("CREATE TEMPORARY TABLE notes (id serial PRIMARY KEY, body text NOT NULL)"))
        connection.execute(text("INSERT INTO notes (body) VALUES (:body)"), [{"body": "é"}, {"body": "two"}])
        rows = connection.execute(text("SELECT id, body FROM notes ORDER BY id")).all()
        assert [tuple(row) for row in rows] == [(1, "é"), (2, "two")]
    with engine.connect() as connection:
        assert connection.execute(text("SELECT current_database(), current_user")).one() == (
            "citygate",
            "citygate",
        )
        assert connection.execute(text("SHOW server_encoding")).scalar_one() == "UTF8"


def test_a_rolled_back_transaction_leaves_nothing(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS kept (name text PRIMARY KEY)"))
        connection.execute(text("TRUNCATE kept"))
    with engine.connect() as connection:
        transaction = connection.begin()
        connection.execute(text("INSERT INTO kept VALUES ('gone')"))
        assert connection.execute(text("SELECT count(*) FROM kept")).scalar_one() == 1
        transaction.rollback()
        assert connection.execute(text("SELECT count(*) FROM kept")).scalar_one() == 0


def test_the_server_is_private_and_a_supported_version(postgres: Postgres, engine: Engine) -> None:
    with engine.connect() as connection:
        assert connection.execute(text("SHOW listen_addresses")).scalar_one() == "127.0.0.1"
        assert int(connection.execute(text("SHOW port")).scalar_one()) == postgres.port
        assert postgres.port != 5432  # never the packaged cluster's port
        sockets = connection.execute(text("SHOW unix_socket_directories")).scalar_one()
        assert sockets == str(postgres.folder)
        assert int(connection.execute(text("SHOW server_version_num")).scalar_one()) >= 150000
    # Nothing answers on another loopback address.
    with pytest.raises(OSError), socket.create_connection(("127.0.0.2", postgres.port), timeout=1):
        pass
