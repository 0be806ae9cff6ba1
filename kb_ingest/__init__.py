"""Knowledge-base ingestion: load, chunk, embed and index what the enterprise knows."""

from pathlib import Path

SAMPLE_KB = Path(__file__).parent / "sample_kb"
