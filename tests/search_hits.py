"""Search hits made by hand, for tests of what is done with them."""

from __future__ import annotations

from kefu.models import Chunk, SearchHit


def hit(chunk_id: str, kind: str, dense: float) -> SearchHit:
    """A hit on an empty English chunk, scored `dense` in every view."""
    chunk = Chunk(
        id=chunk_id,
        kind=kind,  # type: ignore[arg-type]
        lang="en",
        title=chunk_id,
        text="",
        keys=(),
    )
    return SearchHit(chunk=chunk, score=dense, dense=dense, lexical=0.0, nearest=dense)
