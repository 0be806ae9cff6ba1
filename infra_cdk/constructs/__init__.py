"""One construct per capability, each with keyword-only props."""
