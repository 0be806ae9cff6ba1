"""Knowledge-base ingestion: load, chunk, embed and index what the enterprise knows."""

from pathlib import Path

SAMPLE_KB = Path(__file__).parent / "sample_kb"
# What the local stack indexes: FAQ entries, policy documents and out-of-scope examples.
SAMPLE_KB_PATHS = (SAMPLE_KB / "faq", SAMPLE_KB / "docs", SAMPLE_KB / "scope")
