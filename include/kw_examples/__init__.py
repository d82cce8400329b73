"""Handlers and fixtures of the example workflows (shipped in the worker image with the core)."""
