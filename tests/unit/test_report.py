"""The service report: first-contact resolution, response times and satisfaction against their
targets, as a table, as JSON, and from the command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from kefu.report import compute_report, main, render, report_json
from kefu.tickets import FeedbackRecord, TurnRecord
from tests.unit.test_improvement import MemoryInsights

START = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


def turn(
    session: str,
    n: int = 0,
    *,
    latency_ms: float = 1000.0,
    outcome: str = "answered",
    trigger: str = "",
    at: datetime | None = None,
) -> TurnRecord:
    return TurnRecord(
        session_id=session,
        turn_id=f"{session}-{n}",
        at=at or START + timedelta(minutes=n),
        tenant="default",
        language="zh",
        outcome=outcome,
        intent="",
        latency_ms=latency_ms,
        first_turn=n == 0,
        handover_trigger=trigger,
    )


def rating(session: str, stars: int, at: datetime | None = None) -> FeedbackRecord:
    return FeedbackRecord(session_id=session, at=at or START, tenant="default", rating=stars)


def test_no_data_gives_no_shares_and_no_verdicts() -> None:
    report = compute_report([], [])

    assert (report.sessions, report.turns, report.ratings) == (0, 0, 0)
    assert report.first_contact_resolution is None
    assert report.average_ms is None
    assert report.p95_ms is None
    assert report.satisfaction is None
    assert [check.met for check in report.targets] == [None, None, None]
    table = render(report)
    assert "n/a" in table
    assert "no data" in table
    assert "not met" not in table


def test_first_contact_resolution_excludes_hand_overs_and_low_ratings() -> None:
    # Given four sessions: one answered, one handed over at a customer's request, one whose
    # turn is marked handed over without a trigger (a human already had it), and one answered
    # but rated 2
    turns = [
        turn("resolved", 0),
        turn("resolved", 1),
        turn("asked-for-human", 0),
        turn("asked-for-human", 1, outcome="handed_over", trigger="customer_request"),
        turn("handed-over", 0, outcome="handed_over"),
        turn("low-rated", 0),
    ]
    feedback = [rating("resolved", 5), rating("low-rated", 2)]

    report = compute_report(turns, feedback)

    # Then only the first counts as resolved at first contact
    assert report.sessions == 4
    assert report.turns == 6
    assert report.resolved_sessions == 1
    assert report.first_contact_resolution == 0.25
    # and the hand-overs are counted by what started them: the request and the low rating
    assert report.handovers == (("customer_request", 1), ("low_rating", 1))


def test_a_rating_of_three_does_not_unresolve_a_session() -> None:
    report = compute_report([turn("a")], [rating("a", 3)])

    assert report.first_contact_resolution == 1.0
    # but it is not a satisfied rating
    assert report.satisfaction == 0.0


def test_response_times_average_and_percentiles() -> None:
    # Given twenty turns taking 100 ms, 200 ms ... 2000 ms
    turns = [turn(f"s{n}", latency_ms=100.0 * (n + 1)) for n in range(20)]

    report = compute_report(turns, [])

    assert report.average_ms == pytest.approx(1050.0)
    assert report.p50_ms == 1000.0
    assert report.p95_ms == 1900.0


def test_one_turn_is_its_own_percentiles() -> None:
    report = compute_report([turn("a", latency_ms=4200.0)], [])

    assert report.average_ms == report.p50_ms == report.p95_ms == 4200.0
    assert [check.met for check in report.targets][1] is False


def test_satisfaction_is_the_share_of_ratings_of_four_or_five() -> None:
    feedback = [rating("a", 5), rating("b", 4), rating("c", 4), rating("d", 1)]

    report = compute_report([], feedback)

    assert report.ratings == 4
    assert report.satisfied_ratings == 3
    assert report.satisfaction == 0.75


def test_render_marks_each_target_met_or_not() -> None:
    # Given 9 of 10 sessions resolved, 2 s on average, and 8 of 10 ratings satisfied
    turns = [turn(f"s{n}", latency_ms=2000.0) for n in range(9)]
    turns.append(turn("s9", latency_ms=2000.0, outcome="handed_over", trigger="complaint"))
    feedback = [rating(f"s{n}", 5) for n in range(8)] + [rating("s8", 3), rating("s8", 3)]

    table = render(compute_report(turns, feedback, since=START, until=START + timedelta(days=30)))

    lines = table.splitlines()
    assert lines[0] == "Kefu report 2026-11-02T09:00:00+00:00 → 2026-12-02T09:00:00+00:00"
    fcr = next(line for line in lines if line.startswith("First-contact resolution"))
    assert "90.0 %" in fcr
    assert "≥ 85 %" in fcr
    assert fcr.endswith("  met")
    average = next(line for line in lines if line.startswith("Average response"))
    assert "2.00 s" in average
    assert average.endswith("  met")
    satisfaction = next(line for line in lines if line.startswith("Satisfaction"))
    assert "80.0 %" in satisfaction
    assert satisfaction.endswith("not met")
    assert "(10 ratings)" in satisfaction
    assert any(line.split() == ["complaint", "1"] for line in lines)


def test_report_json_carries_the_measures_and_verdicts() -> None:
    report = compute_report(
        [turn("a"), turn("b", outcome="handed_over", trigger="low_rating")], [rating("a", 5)]
    )

    data = json.loads(report_json(report))

    assert data["sessions"] == 2
    assert data["first_contact_resolution"] == 0.5
    assert data["handovers"] == {"low_rating": 1}
    assert data["targets"]["first_contact_resolution"]["met"] is False
    assert data["targets"]["average_response_ms"] == {
        "value": 1000.0,
        "target": 3000.0,
        "comparison": "<=",
        "met": True,
    }
    assert data["targets"]["satisfaction"]["met"] is True


# --- the command line ---------------------------------------------------------------------


@pytest.fixture
def insights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryInsights]:
    """The CLI's insights store: a fake in place of the configured one, under a temp data dir."""
    from kefu import bootstrap

    store = MemoryInsights()
    monkeypatch.setenv("KEFU_DATA_DIR", str(tmp_path))
    bootstrap.get_settings.cache_clear()
    monkeypatch.setattr(bootstrap, "build_insights", lambda _: store)
    yield store
    bootstrap.get_settings.cache_clear()


def test_the_cli_reports_the_window_given(
    insights: MemoryInsights, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a turn inside the window and one before it
    insights.record_turn(turn("in", latency_ms=500.0))
    insights.record_turn(turn("before", at=START - timedelta(days=40)))
    insights.record_feedback(rating("in", 5))

    # When the report is asked for the month of November
    code = main(["--since", "2026-11-01", "--until", "2026-12-01T00:00:00+00:00", "--json"])

    # Then only the turn inside counts
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["since"] == "2026-11-01T00:00:00+00:00"
    assert data["until"] == "2026-12-01T00:00:00+00:00"
    assert data["sessions"] == 1
    assert data["average_ms"] == 500.0
    assert data["satisfaction"] == 1.0


def test_the_cli_prints_a_table_for_the_last_days_and_exits_0_with_targets_missed(
    insights: MemoryInsights, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    insights.record_turn(turn("slow", latency_ms=9000.0, at=now - timedelta(days=2)))
    insights.record_turn(turn("old", at=now - timedelta(days=20)))

    assert main(["--days", "7"]) == 0

    out = capsys.readouterr().out
    assert "Sessions" in out
    assert "9.00 s" in out
    assert "not met" in out


def test_the_cli_with_no_data_still_exits_0(
    insights: MemoryInsights, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([]) == 0
    assert "n/a" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        pytest.param(["--since", "yesterday"], id="not ISO"),
        pytest.param(["--days", "0"], id="no days"),
        pytest.param(["--days", "many"], id="not a number"),
        pytest.param(["--since", "2026-12-01", "--until", "2026-11-01"], id="reversed"),
    ],
)
def test_bad_arguments_exit_2(
    insights: MemoryInsights, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "python -m kefu.report" in capsys.readouterr().err
