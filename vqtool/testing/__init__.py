"""Deterministic tiny random models for tests and examples (one module per family)."""
