"""Changelog-backed faust tables and typed access helpers."""
