"""The evaluation CLI scores with the chat pipeline's own retrieval and decision."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from kb_ingest import evaluate as ev
from kefu.adapters.embedders import HashingEmbedder
from kefu.decision import Thresholds
from kefu.models import Chunk, SearchHit


def _hit(chunk_id: str, dense: float, kind: str = "faq") -> SearchHit:
    chunk = Chunk(id=chunk_id, kind=kind, lang="en", title=chunk_id, text="", keys=())  # type: ignore[arg-type]
    return SearchHit(chunk=chunk, score=dense, dense=dense, lexical=0.0, nearest=dense)


def _thresholds(similarity: float) -> Thresholds:
    """Thresholds for hits no head ranked: their similarity decides."""
    return Thresholds(fit=similarity, head=0.5, similarity=similarity, passage=0.99)


SCORED = [
    # the expected entry first, second, and absent
    ev.Scored(ev.Query("a", "x"), (_hit("x", 0.9), _hit("y", 0.5))),
    ev.Scored(ev.Query("b", "x"), (_hit("y", 0.8), _hit("x", 0.7))),
    ev.Scored(ev.Query("c", "x"), (_hit("y", 0.85), _hit("z", 0.6))),
    # not covered: its best match is weak, and strong
    ev.Scored(ev.Query("d", None), (_hit("y", 0.75),)),
    ev.Scored(ev.Query("e", None), (_hit("y", 0.95),)),
]


def test_ranking_metrics_and_the_decision_are_counted_per_query() -> None:
    report = ev.report("t", _thresholds(0.78), SCORED)
    assert (report.covered, report.uncovered) == (3, 2)
    assert report.hit_at_1 == pytest.approx(1 / 3)
    assert report.hit_at_5 == pytest.approx(2 / 3)
    assert report.mrr == pytest.approx((1 + 1 / 2) / 3)
    # Only "a" is answered with the right entry; "b" and "c" are answered wrongly.
    assert report.in_scope_accuracy == pytest.approx(1 / 3)
    assert report.oos_recall == 0.5
    assert report.oos_precision == 1.0
    assert (report.faq_threshold, report.head_threshold) == (0.78, None)  # no head took part


def test_calibration_picks_the_threshold_that_balances_answering_and_declining() -> None:
    scored = [
        ev.Scored(ev.Query("a", "x"), (_hit("x", 0.9),)),
        ev.Scored(ev.Query("b", "x"), (_hit("x", 0.8),)),
        ev.Scored(ev.Query("c", None), (_hit("y", 0.7),)),
    ]
    calibrated = ev.calibrate(_thresholds(0.95), scored)
    # Without a head, the similarity's (and the fit's with it, as a FAQ threshold given alone)
    assert (calibrated.similarity, calibrated.fit) == (0.8, 0.8)
    assert (calibrated.head, calibrated.passage) == (0.5, 0.99)


def test_with_a_head_calibration_picks_the_fit_and_head_thresholds_together() -> None:
    def ranked(chunk_id: str, fit: float, probability: float) -> SearchHit:
        return replace(_hit(chunk_id, 0.5), fit=fit, probability=probability)

    scored = [
        ev.Scored(ev.Query("a", "x"), (ranked("x", 0.9, 0.9),)),
        ev.Scored(ev.Query("b", "x"), (ranked("x", 0.8, 0.7),)),
        # near, but spread over neighbours; sure, but far
        ev.Scored(ev.Query("c", None), (ranked("y", 0.85, 0.4),)),
        ev.Scored(ev.Query("d", None), (ranked("y", 0.6, 0.95),)),
    ]
    calibrated = ev.calibrate(_thresholds(0.99), scored)
    assert 0.6 < calibrated.fit <= 0.8
    assert 0.4 < calibrated.head <= 0.7
    assert calibrated.similarity == 0.99  # not what a head's hits are held to
    report = ev.report("t", calibrated, scored)
    assert (report.in_scope_accuracy, report.oos_recall) == (1.0, 1.0)
    assert (report.faq_threshold, report.head_threshold) == (calibrated.fit, calibrated.head)


def test_the_cli_indexes_a_kb_and_reports_as_json(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mini_kb_paths: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The mini KB's own thresholds (as the `retriever` fixture's). The built-in hashing ones are
    # the sample KB's: on the mini KB (four questions an entry, words and bigrams hashed) the
    # English shipping entry's questions share few words, its fit is raised by 0.25 and the
    # nonsense question's 0.045 similarity reaches the sample's 0.168.
    for name, value in (("FAQ", "0.4"), ("HEAD", "0.58"), ("PASSAGE", "0.3")):
        monkeypatch.setenv(f"KEFU_{name}_THRESHOLD", value)
    queries = tmp_path / "q.jsonl"
    rows = [
        {"query": "How long does a refund take?", "expected_id": "refund-01-en"},
        {"query": "退款多久到账？", "expected_id": "refund-01-zh"},
        {"query": "qwxz plorb vintage", "expected_id": None},
    ]
    queries.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), "utf-8")
    argv = ["--kb", *map(str, mini_kb_paths), "--queries", str(queries), "--embedder", "hashing"]
    assert ev.main([*argv, "--json"]) == 0
    [report] = json.loads(capsys.readouterr().out)
    assert report["name"] == "q"
    assert (report["covered"], report["uncovered"]) == (2, 1)
    assert report["hit_at_1"] == 1.0
    assert report["in_scope_accuracy"] == 1.0
    assert report["oos_recall"] == 1.0
    assert ev.main(argv) == 0
    assert "answered right" in capsys.readouterr().out


def test_the_head_can_be_trained_as_a_large_kbs_is_for_one_evaluation(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mini_kb_paths: list[Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kb_ingest import head_training

    seen: list[int] = []
    real_train = head_training._train_on_nearest

    def recording(*args: Any) -> Any:
        seen.append(args[-1].max_full_cells)  # the `Training` it was given
        return real_train(*args)

    monkeypatch.setattr(head_training, "_train_on_nearest", recording)
    queries = tmp_path / "q.jsonl"
    queries.write_text(json.dumps({"query": "refund timing", "expected_id": "refund-01-en"}))
    argv = ["--kb", *map(str, mini_kb_paths), "--queries", str(queries), "--embedder", "hashing"]

    assert ev.main([*argv, "--json"]) == 0
    assert seen == []  # six entries: the full softmax
    assert ev.main([*argv, "--json", "--nearest-training"]) == 0
    assert seen == [0]
    assert ev.main([*argv, "--json"]) == 0
    assert seen == [0]  # for that evaluation only
    capsys.readouterr()


def test_the_cli_needs_a_kb_and_queries() -> None:
    with pytest.raises(SystemExit) as exit_info:
        ev.main([])
    assert exit_info.value.code == 2


def _dataset(folder: Path) -> Path:
    folder.mkdir()
    topics = {
        "refund": ["how long does a refund take", "refund timing please", "when is my money back"],
        "password": ["reset my password", "forgot password help", "cannot log in password"],
        "parcel": ["where is my parcel", "track the delivery", "parcel not arrived yet"],
        "invoice": ["download an invoice", "need a vat invoice", "invoice for my order"],
    }
    kb = [
        {"id": k, "questions": qs, "answer": f"[{k}]", "category": k, "lang": "en"}
        for k, qs in topics.items()
    ]
    (folder / "kb.jsonl").write_text("\n".join(json.dumps(e) for e in kb), "utf-8")
    for name in ("queries.jsonl", "dev_queries.jsonl"):
        rows = [{"query": qs[0] + " now", "expected_id": k} for k, qs in topics.items()]
        (folder / name).write_text("\n".join(json.dumps(r) for r in rows), "utf-8")
    return folder


def test_holding_out_entries_removes_them_and_turns_their_queries_into_declines(
    tmp_path: Path,
) -> None:
    folder = _dataset(tmp_path / "toy")
    partial, held = ev.hold_out(folder / "kb.jsonl", 0.25, tmp_path)
    assert len(held) == 1
    kept = {json.loads(line)["id"] for line in partial.read_text("utf-8").splitlines()}
    assert kept.isdisjoint(held)
    assert len(kept) == 3
    (tmp_path / "again").mkdir()
    again = ev.hold_out(folder / "kb.jsonl", 0.25, tmp_path / "again")[1]
    assert again == held  # the same entries every run
    queries = ev.load_queries(folder / "queries.jsonl", held)
    assert [q.expected_id for q in queries if q.expected_id is None] == [None]


def test_a_dataset_is_reported_whole_and_with_entries_held_out(tmp_path: Path) -> None:
    folder = _dataset(tmp_path / "toy")
    whole, partial = ev.evaluate_dataset(folder, settings=ev.Settings(embedder="hashing"))
    assert (whole.name, whole.covered, whole.uncovered) == ("toy", 4, 0)
    assert (partial.name, partial.covered, partial.uncovered) == ("toy (-25%)", 3, 1)
    assert whole.oos_recall is None
    assert partial.oos_recall is not None
    # The hold-out threshold keeps in-scope accuracy within 5 points of never declining.
    drop = ev.Calibration().max_in_scope_drop
    assert partial.in_scope_accuracy >= partial.hit_at_1 - drop - 1e-9


def test_calibration_can_decline_as_much_as_a_bounded_in_scope_loss_allows() -> None:
    scored = [
        ev.Scored(ev.Query("a", "x"), (_hit("x", 0.95),)),
        ev.Scored(ev.Query("b", "x"), (_hit("x", 0.90),)),
        ev.Scored(ev.Query("c", "x"), (_hit("x", 0.80),)),
        ev.Scored(ev.Query("d", "x"), (_hit("x", 0.70),)),
        ev.Scored(ev.Query("e", None), (_hit("y", 0.85),)),
        ev.Scored(ev.Query("f", None), (_hit("y", 0.75),)),
    ]
    # Losing one covered question in four (25 points) buys one decline; 5 points buys none.
    assert ev.calibrate(_thresholds(0.5), scored, max_in_scope_drop=0.25).similarity == 0.8
    assert ev.calibrate(_thresholds(0.5), scored, max_in_scope_drop=0.05).similarity == 0.7


class _Uncalibrated(HashingEmbedder):
    """The hashing embedder under a name with no built-in thresholds."""

    name = "hashing-uncalibrated"


def _without_built_in_thresholds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ev, "build_embedder", lambda *args, **kwargs: _Uncalibrated())


def test_an_embedder_without_built_in_thresholds_can_be_calibrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _without_built_in_thresholds(monkeypatch)
    folder = _dataset(tmp_path / "toy")
    [report] = ev.evaluate(
        [folder / "kb.jsonl"],
        {"toy": folder / "queries.jsonl"},
        settings=ev.Settings(embedder="hashing"),
        dev=folder / "dev_queries.jsonl",
    )
    assert report.in_scope_accuracy == 1.0
    assert 0.0 < report.faq_threshold <= 1.0


@pytest.mark.parametrize("given", [{}, {"faq_threshold": 0.5}])
def test_an_embedder_without_thresholds_is_ranked_without_a_dev_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: dict[str, float]
) -> None:
    _without_built_in_thresholds(monkeypatch)
    folder = _dataset(tmp_path / "toy")
    settings = ev.Settings(embedder="hashing", **given)  # type: ignore[arg-type]
    [report] = ev.evaluate(
        [folder / "kb.jsonl"], {"toy": folder / "queries.jsonl"}, settings=settings
    )
    # not all three given: what is given applies, the rest is open, and the ranking is reported
    assert report.faq_threshold == given.get("faq_threshold", 0.0)
    assert report.head_threshold == 0.0
    assert report.hit_at_1 == 1.0


def test_tune_encoder_and_e5_model_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        ev.main(["--sample", "--tune-encoder", "--e5-model", str(tmp_path / "x.bin")])
    with pytest.raises(SystemExit):
        ev.main(["--sample", "--tune-encoder", "--embedder", "hashing"])
