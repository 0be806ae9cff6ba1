"""Stacks compose the constructs and grant access between them."""
