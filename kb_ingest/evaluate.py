"""Retrieval evaluation with the chat pipeline's own retrieval and answer-or-decline decision.

python -m kb_ingest.evaluate --kb KB.jsonl --queries Q.jsonl [--calibrate DEV.jsonl] [--json]
python -m kb_ingest.evaluate --sample [--calibrate-sample]   # the bundled sample KB
python -m kb_ingest.evaluate --datasets ../shared/datasets   # every dataset folder in there
python -m kb_ingest.evaluate --dialogues FILE [--json]   # whole conversations (kb_ingest.dialogues)
... [--keep DIR]    # with --dialogues: the sessions and records stay in DIR (for kefu.report)
... [--no-head]     # ranked and accepted by similarity alone, as without a trained FAQ head
... [--nearest-training]   # the FAQ head trained as a large KB's is (nearest entries only)
... [--tune-encoder]   # e5 tuned on each KB but the sample's first (kb_ingest.tuning; cached)
... [--e5-model FILE]  # e5 from a tuned image

The KB is ingested as the CLI ingests it, FAQ head included. A dataset folder holds `kb.jsonl`,
`queries.jsonl` and `dev_queries.jsonl`. Each is evaluated twice: whole, with the built-in
thresholds; and with a quarter of its entries held out of the KB (their queries then expect a
decline), the thresholds calibrated on the dev queries to decline as many as they can while
in-scope accuracy stays within 5 points of never declining. *hit@1* is what answering from the
best-ranked entry, never declining, would score.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from kb_ingest import SAMPLE_KB, SAMPLE_KB_PATHS
from kb_ingest.dialogues import report_dialogues
from kb_ingest.head_training import Training
from kb_ingest.pipeline import ingest
from kefu.adapters.embedded_index import EmbeddedIndex
from kefu.bootstrap import build_embedder
from kefu.decision import UNCALIBRATED, Thresholds, decide, resolve_thresholds
from kefu.models import SearchHit
from kefu.retrieval import Retriever
from kefu.scoring import Blend
from kefu.settings import Settings
from kefu.text import detect_language


@dataclass(frozen=True)  # no slots: the fields' defaults serve as the functions' defaults
class Calibration:
    """How thresholds are searched and the held-out evaluation run: `rank_depth` hits are
    ranked per query; with a head, the fit and head thresholds are searched on a grid of
    `grid` values each; a dataset is also evaluated with `holdout_share` of its entries held
    out, declining as many of their queries as it can while in-scope accuracy stays within
    `max_in_scope_drop` of never declining."""

    rank_depth: int = 10
    grid: int = 30
    holdout_share: float = 0.25
    max_in_scope_drop: float = 0.05


@dataclass(frozen=True, slots=True)
class Query:
    query: str
    expected_id: str | None


@dataclass(frozen=True, slots=True)
class Scored:
    query: Query
    hits: tuple[SearchHit, ...]


@dataclass(frozen=True, slots=True)
class Report:
    name: str
    covered: int
    uncovered: int
    hit_at_1: float
    hit_at_5: float
    mrr: float
    in_scope_accuracy: float
    oos_recall: float | None
    oos_precision: float | None
    faq_threshold: float  # the fit's, or without a head the similarity's
    head_threshold: float | None  # None: no FAQ head took part


def load_queries(path: Path, held_out: frozenset[str] = frozenset()) -> list[Query]:
    """Evaluation queries; a query whose entry was held out of the KB expects a decline."""
    queries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            expected = row.get("expected_id")
            queries.append(Query(str(row["query"]), None if expected in held_out else expected))
    return queries


def hold_out(kb_file: Path, share: float, folder: Path) -> tuple[Path, frozenset[str]]:
    """A copy of an FAQ file without `share` of its entries, drawn with `random.Random(0)`."""
    lines = [line for line in kb_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    ids = sorted(str(json.loads(line)["id"]) for line in lines)
    held = frozenset(random.Random(0).sample(ids, round(share * len(ids))))
    kept = [line for line in lines if str(json.loads(line)["id"]) not in held]
    copy = folder / kb_file.name
    copy.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return copy, held


def score(
    retriever: Retriever, queries: Sequence[Query], tenant: str, depth: int = Calibration.rank_depth
) -> list[Scored]:
    """Retrieve for every query exactly as a chat turn does (language detected, tenant filter)."""
    return [
        Scored(
            q,
            tuple(
                retriever.search(
                    q.query, language=detect_language(q.query), tenant=tenant, limit=depth
                )
            ),
        )
        for q in queries
    ]


def report(name: str, thresholds: Thresholds, scored: Sequence[Scored]) -> Report:
    covered = [s for s in scored if s.query.expected_id is not None]
    uncovered = [s for s in scored if s.query.expected_id is None]
    hit1 = hit5 = rr = correct = declined_covered = 0.0
    for s in covered:
        faq_ids = [h.chunk.id for h in s.hits if h.chunk.kind == "faq"]
        if s.query.expected_id in faq_ids:
            rank = faq_ids.index(s.query.expected_id) + 1
            hit1 += rank == 1
            hit5 += rank <= 5
            rr += 1 / rank
        decision = decide(s.hits, thresholds)
        correct += decision.kind == "faq" and decision.hits[0].chunk.id == s.query.expected_id
        declined_covered += decision.kind == "decline"
    by_head = any(h.probability is not None for s in scored for h in s.hits)
    declined_uncovered = sum(decide(s.hits, thresholds).kind == "decline" for s in uncovered)
    declined_all = declined_uncovered + declined_covered
    n = max(len(covered), 1)
    return Report(
        name=name,
        covered=len(covered),
        uncovered=len(uncovered),
        hit_at_1=hit1 / n,
        hit_at_5=hit5 / n,
        mrr=rr / n,
        in_scope_accuracy=correct / n,
        oos_recall=declined_uncovered / len(uncovered) if uncovered else None,
        oos_precision=(declined_uncovered / declined_all if declined_all else None)
        if uncovered
        else None,
        faq_threshold=thresholds.fit if by_head else thresholds.similarity,
        head_threshold=thresholds.head if by_head else None,
    )


def calibrate(
    thresholds: Thresholds,
    scored: Sequence[Scored],
    *,
    max_in_scope_drop: float | None = None,
    grid: int = Calibration.grid,
) -> Thresholds:
    """The thresholds that best balance answering covered and declining uncovered questions:
    with a head, the fit and head thresholds together; without one, the similarity threshold
    (and the fit's with it, as a FAQ threshold given alone holds for both).

    By default they maximise the mean of in-scope accuracy and out-of-scope recall. With
    `max_in_scope_drop`, they decline as much as they can while in-scope accuracy stays within
    that much of its value when nothing is declined for being too far.
    """
    tops = [faqs[0] for s in scored if (faqs := [h for h in s.hits if h.chunk.kind == "faq"])]
    by_head = any(h.fit is not None for h in tops)
    if by_head:
        fits = _grid([h.fit for h in tops if h.fit is not None], grid)
        heads = _grid([h.probability for h in tops if h.probability is not None], grid)
    else:
        fits, heads = _grid([h.dense for h in tops], None), [thresholds.head]

    def trial(value: float, head: float) -> Thresholds:
        if by_head:
            return replace(thresholds, fit=value, head=head)
        return replace(thresholds, fit=value, similarity=value)

    floor = None
    if max_in_scope_drop is not None:
        never = report("calibration", trial(-1.0, -1.0), scored).in_scope_accuracy
        floor = never - max_in_scope_drop
    best, best_value = thresholds, -1.0
    for fit in fits:
        for head in heads:
            candidate = trial(fit, head)
            r = report("calibration", candidate, scored)
            oos = r.oos_recall if r.oos_recall is not None else 0.0
            if floor is not None:
                objective = oos if r.in_scope_accuracy >= floor - 1e-9 else -1.0
            elif r.oos_recall is not None:
                objective = (r.in_scope_accuracy + oos) / 2
            else:
                objective = r.in_scope_accuracy
            if objective > best_value:
                best, best_value = candidate, objective
    return best


def _grid(values: Sequence[float], points: int | None) -> list[float]:
    """The distinct values rounded down to 3 decimals (so that a threshold taken from a score
    still admits that score), thinned to `points` evenly spread ones when given."""
    distinct = sorted({math.floor(v * 1000) / 1000 for v in values})
    if points is None or len(distinct) <= points:
        return distinct
    return [distinct[round(i * (len(distinct) - 1) / (points - 1))] for i in range(points)]


def evaluate(
    kb_paths: Sequence[Path],
    query_sets: dict[str, Path],
    *,
    settings: Settings,
    dev: Path | None = None,
    held_out: frozenset[str] = frozenset(),
    max_in_scope_drop: float | None = None,
    use_head: bool = True,
    tune: Path | None = None,
    training: Training = Training(),  # noqa: B008 (frozen)
    calibration: Calibration = Calibration(),
) -> list[Report]:
    """Index the KB once (its head trained as `training` says), calibrate on `dev` if given,
    and report on every query set.

    Without `use_head`, FAQ entries are ranked and accepted by similarity alone. With `tune`
    (a cache folder), the e5 encoder is first tuned on this KB's questions. An embedder with no
    built-in thresholds (Titan, a SageMaker model, a tuned e5) starts from what the settings
    give, the rest `UNCALIBRATED`: the ranking figures hold, calibration measures the fit and
    head thresholds, the passage threshold stays as given."""
    if tune is not None:
        settings = settings.model_copy(update={"e5_model": _tuned_for(kb_paths, tune)})
    embedder = build_embedder(settings, interactive=False)
    index = EmbeddedIndex(":memory:", blend=Blend(lexical_weight=settings.lexical_weight))
    ingest(kb_paths, index=index, embedder=embedder, tenant=settings.tenant, training=training)
    thresholds = resolve_thresholds(settings, embedder.name, fallback=UNCALIBRATED)
    retriever = Retriever(embedder=embedder, index=index, thresholds=thresholds, use_head=use_head)

    def scored(path: Path) -> list[Scored]:
        queries = load_queries(path, held_out)
        return score(retriever, queries, settings.tenant, calibration.rank_depth)

    if dev is not None:
        thresholds = calibrate(
            thresholds, scored(dev), max_in_scope_drop=max_in_scope_drop, grid=calibration.grid
        )
    return [report(name, thresholds, scored(path)) for name, path in query_sets.items()]


def _tuned_for(kb_paths: Sequence[Path], cache: Path) -> Path:
    """The e5 image tuned on the KB's FAQ questions (cached by what it was tuned on)."""
    from kb_ingest.tuning import examples_in, tuned_image

    return tuned_image(examples_in(kb_paths), cache)


def evaluate_dataset(
    folder: Path,
    *,
    settings: Settings,
    use_head: bool = True,
    tune: Path | None = None,
    training: Training = Training(),  # noqa: B008 (frozen)
    calibration: Calibration = Calibration(),
) -> list[Report]:
    """A dataset whole, then with a share of its entries held out and the threshold calibrated
    (with `tune`, the encoder is tuned on each of the two KBs: held-out entries stay unseen)."""
    kb, queries, dev = (folder / f for f in ("kb.jsonl", "queries.jsonl", "dev_queries.jsonl"))
    run = functools.partial(
        evaluate,
        settings=settings,
        use_head=use_head,
        tune=tune,
        training=training,
        calibration=calibration,
    )
    reports = run([kb], {folder.name: queries})
    with tempfile.TemporaryDirectory() as work:
        share = calibration.holdout_share
        partial, held = hold_out(kb, share, Path(work))
        reports += run(
            [partial],
            {f"{folder.name} (-{share:.0%})": queries},
            dev=dev,
            held_out=held,
            max_in_scope_drop=calibration.max_in_scope_drop,
        )
    return reports


def _pct(value: float | None) -> str:
    return "   -  " if value is None else f"{100 * value:5.1f}%"


def render(reports: Sequence[Report]) -> str:
    header = (
        f"{'set':<20}{'covered':>8}{'uncov.':>8}{'hit@1':>8}{'hit@5':>8}{'MRR':>7}"
        f"{'answered right':>16}{'OOS recall':>12}{'OOS prec.':>11}  thresholds (fit, head)"
    )
    rows = [
        f"{r.name:<20}{r.covered:>8}{r.uncovered:>8}{_pct(r.hit_at_1):>8}{_pct(r.hit_at_5):>8}"
        f"{r.mrr:>7.3f}{_pct(r.in_scope_accuracy):>16}{_pct(r.oos_recall):>12}"
        f"{_pct(r.oos_precision):>11}  {r.faq_threshold:.3f}"
        + ("" if r.head_threshold is None else f", {r.head_threshold:.3f}")
        for r in reports
    ]
    return "\n".join([header, *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kb_ingest.evaluate", description=__doc__)
    parser.add_argument("--kb", type=Path, nargs="+", help="knowledge-base files or folders")
    parser.add_argument("--queries", type=Path, help="evaluation queries (JSONL)")
    parser.add_argument("--calibrate", type=Path, help="tune the decline threshold on these")
    parser.add_argument("--sample", action="store_true", help="the bundled sample KB")
    parser.add_argument(
        "--datasets", type=Path, help="a folder of dataset folders (kb.jsonl, queries.jsonl, …)"
    )
    parser.add_argument(
        "--calibrate-sample",
        action="store_true",
        help="with --sample: tune the threshold on the sample's dev set first",
    )
    parser.add_argument(
        "--embedder", choices=["e5", "hashing", "bedrock", "sagemaker"], default=None
    )
    parser.add_argument(
        "--no-head",
        action="store_true",
        help="rank and accept FAQ entries by similarity alone, as without a trained FAQ head",
    )
    parser.add_argument(
        "--nearest-training",
        action="store_true",
        help="train the FAQ head as a KB over the full-softmax budget is trained (each question "
        "against its nearest entries), to measure what that costs",
    )
    parser.add_argument(
        "--tune-encoder",
        action="store_true",
        help="tune e5 on each dataset's and --kb's KB first, not the sample's (needs PyTorch: "
        "make tune-deps; tuned images are cached under KEFU_DATA_DIR/tuned)",
    )
    parser.add_argument("--e5-model", type=Path, help="an e5 image tuned on the KB")
    parser.add_argument(
        "--dialogues",
        type=Path,
        help="multi-turn dialogues (JSONL) through the local chat service on the sample KB",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="with --dialogues: keep the sessions, tickets and turn records in DIR "
        "(then KEFU_DATA_DIR=DIR python -m kefu.report)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    overrides: dict[str, object] = {"embedder": args.embedder} if args.embedder else {}
    if args.e5_model:
        overrides["e5_model"] = args.e5_model
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if (args.tune_encoder or args.e5_model) and settings.embedder != "e5":
        parser.error("--tune-encoder and --e5-model go with the e5 embedder")
    if args.tune_encoder and args.e5_model:
        parser.error("--tune-encoder tunes the bundled e5 image: give it or --e5-model")
    if args.dialogues:
        retrieval_only = (
            "kb",
            "queries",
            "calibrate",
            "sample",
            "datasets",
            "calibrate_sample",
            "no_head",
            "nearest_training",
            "tune_encoder",
        )
        if any(getattr(args, name) for name in retrieval_only):
            parser.error("--dialogues takes only --embedder, --e5-model, --keep and --json")
        print(report_dialogues(args.dialogues, settings, as_json=args.json, data_dir=args.keep))
        return 0
    if args.keep:
        parser.error("--keep goes with --dialogues")
    reports = _run(args, settings)
    if not reports:
        parser.error("give --sample, --datasets, or --kb and --queries")
    print(json.dumps([asdict(r) for r in reports], indent=2) if args.json else render(reports))
    return 0


def _run(args: argparse.Namespace, settings: Settings) -> list[Report]:
    """Every evaluation the arguments ask for."""
    reports: list[Report] = []
    tune = settings.data_dir / "tuned" if args.tune_encoder else None
    # Every KB trained as one over the full-softmax budget is, whatever its size.
    training = Training(max_full_cells=0) if args.nearest_training else Training()
    if args.sample:
        evals = SAMPLE_KB / "eval"
        reports += evaluate(
            list(SAMPLE_KB_PATHS),
            {"sample": evals / "queries.jsonl", "sample (dev)": evals / "dev_queries.jsonl"},
            settings=settings,
            dev=evals / "dev_queries.jsonl" if args.calibrate_sample else None,
            use_head=not args.no_head,
            training=training,
        )
    if args.kb and args.queries:
        reports += evaluate(
            args.kb,
            {args.queries.stem: args.queries},
            settings=settings,
            dev=args.calibrate,
            use_head=not args.no_head,
            tune=tune,
            training=training,
        )
    if args.datasets:
        for folder in sorted(p for p in args.datasets.iterdir() if (p / "kb.jsonl").is_file()):
            reports += evaluate_dataset(
                folder, settings=settings, use_head=not args.no_head, tune=tune, training=training
            )
    return reports


if __name__ == "__main__":
    sys.exit(main())
