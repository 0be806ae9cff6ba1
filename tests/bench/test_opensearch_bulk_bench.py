"""Benchmark of the OpenSearch index's bulk requests (`make bench`; not part of `make test`).

A recording client stands in for the cluster, so this measures what the adapter sends, not
how fast a cluster takes it: how many bulk requests an ingest of 10,000 FAQ entries makes
(384-dim vectors, four questions each), how large they are against the byte bound, and the
bytes each chunk costs. Every request must stay within the bound.
"""

from __future__ import annotations

import random
import statistics
import time

import numpy as np

from kefu.adapters.opensearch import OpenSearchIndex
from kefu.models import Chunk
from tests.bench.synthetic_text import sentence
from tests.opensearch_fake import RecordingClient

_BOUND = 5 * 1024 * 1024


def test_bulk_requests_for_10k_faq_entries_stay_within_the_bound() -> None:
    entries, questions, dim = 10_000, 4, 384
    rng = random.Random(13)
    chunks = []
    for number in range(entries):
        lang = "zh" if number % 2 else "en"
        chunks.append(
            Chunk(
                id=f"bench-{number:06d}",
                kind="faq",
                lang=lang,  # type: ignore[arg-type]
                title=sentence(rng, lang),
                text=" ".join(sentence(rng, lang) for _ in range(3)),
                keys=tuple(sentence(rng, lang) for _ in range(questions)),
                category="orders",
            )
        )
    vectors = np.random.default_rng(13).standard_normal((entries, 1 + questions, dim))
    vectors = (vectors / np.linalg.norm(vectors, axis=2, keepdims=True)).astype(np.float32)
    client = RecordingClient()
    index = OpenSearchIndex(client, "bench", dim=dim, max_bulk_bytes=_BOUND)  # type: ignore[arg-type]

    started = time.perf_counter()
    index.upsert(chunks, list(vectors))
    seconds = time.perf_counter() - started

    sizes = [len(call.kwargs["body"].encode()) for call in client.of("bulk")]
    documents = [call.kwargs["body"].count("\n") // 2 for call in client.of("bulk")]
    print(
        f"\nbulk: {entries:,} FAQ entries ({questions} questions, {dim}-dim) in {len(sizes)} "
        f"requests, prepared in {seconds:.1f} s ({entries / seconds:,.0f} entries/s); "
        f"request size min {min(sizes):,} / median {statistics.median(sizes):,.0f} / "
        f"max {max(sizes):,} bytes against a bound of {_BOUND:,} "
        f"({max(sizes) / _BOUND:.0%} of it); {min(documents)}-{max(documents)} entries a request; "
        f"{sum(sizes) / entries:,.0f} bytes per entry"
    )
    assert sum(documents) == entries
    assert max(sizes) <= _BOUND
