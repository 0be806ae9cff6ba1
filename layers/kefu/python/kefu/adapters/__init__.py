"""Adapters: one implementation of a port each, for AWS or for the local stack."""
