"""`make load`'s core, small: the local stack under a few conversations at once, read back."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from local.load import check_stores, conversations_for, run, run_local_stack
from local.server import make_server

SESSIONS = 8
TURNS = 3


@pytest.fixture
def url(configured: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The local server in this process on a free loopback port, over the mini KB."""
    from kefu.bootstrap import get_chat_service

    # As `python -m local` runs it: metrics off, the service built before serving
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    get_chat_service()
    server = make_server("127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.timeout(120)
def test_the_local_stack_answers_and_stores_every_turn_of_conversations_at_once(
    monkeypatch: pytest.MonkeyPatch, mini_kb_paths: list[Path]
) -> None:
    # Given the local stack as `make load` starts it (here over the mini KB, hashed)
    monkeypatch.setenv("KEFU_EMBEDDER", "hashing")
    conversations = conversations_for(SESSIONS, TURNS, seed=11, kb=mini_kb_paths)

    # When 8 customers write 3 messages each, all at once
    report = run_local_stack(conversations, seed=11, kb=mini_kb_paths, index_cache=None, echo=False)

    # Then every message is answered, and every answered turn is stored, in order
    assert dict(report.errors) == {}
    assert not report.failed
    assert len([r for r in report.results if r.reply is not None]) == SESSIONS * TURNS
    assert len({c.session_id for c in conversations}) == SESSIONS
    assert "session store" in report.checked
    rendered = report.render()
    assert "errors        none" in rendered
    assert "stored        every answered turn" in rendered


def test_a_turn_the_stores_lost_is_an_error(url: str, configured: Path) -> None:
    # Given conversations answered and stored
    conversations = conversations_for(SESSIONS, TURNS, seed=12)
    report = run(url, conversations, seed=12, data_dir=configured)
    assert dict(report.errors) == {}

    # When one conversation's memory and one turn's record are lost
    lost_session = conversations[0].session_id
    lost_turn = conversations[1].results[-1].reply
    assert lost_session is not None
    assert lost_turn is not None
    with sqlite3.connect(configured / "sessions.sqlite3") as db:
        db.execute("DELETE FROM conversations WHERE session_id = ?", (lost_session,))
    with sqlite3.connect(configured / "insights.sqlite3") as db:
        db.execute("DELETE FROM turns WHERE turn_id = ?", (lost_turn.turn_id,))

    # Then reading the conversations back finds the turns missing
    errors = check_stores(configured, conversations, datetime.now(UTC) - timedelta(hours=1))
    assert errors["missing turn (session)"] == TURNS
    assert errors["missing turn (turn records)"] == 1
