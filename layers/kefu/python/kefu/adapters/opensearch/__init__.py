"""The knowledge index on Amazon OpenSearch Service: k-NN vectors and BM25 text in one index,
one document per chunk, scored with the same blend as the embedded index (`kefu.scoring`).

- `index`: `OpenSearchIndex`, the `KnowledgeIndex` port, composed of the parts below;
- `mapping`: document ids, the chunk and meta mappings, the search pipeline and their setup;
- `writes`: bulk upserts and deletes, the KB version counter, the FAQ heads;
- `reads`: the KB version, paged scans of a tenant's chunks, the FAQ heads;
- `search`: the candidates' `hybrid` query, their exact scoring, and the hits;
- `client`: `connect`, its time budgets, and transport errors as `DependencyUnavailable`.
"""

from kefu.adapters.opensearch.client import (
    BATCH_RETRIES,
    BATCH_TIMEOUT,
    INTERACTIVE_RETRIES,
    INTERACTIVE_TIMEOUT,
    connect,
)
from kefu.adapters.opensearch.index import OpenSearchIndex
from kefu.adapters.opensearch.mapping import document_id
from kefu.adapters.opensearch.search import SEARCH_REQUESTS

__all__ = [
    "BATCH_RETRIES",
    "BATCH_TIMEOUT",
    "INTERACTIVE_RETRIES",
    "INTERACTIVE_TIMEOUT",
    "SEARCH_REQUESTS",
    "OpenSearchIndex",
    "connect",
    "document_id",
]
