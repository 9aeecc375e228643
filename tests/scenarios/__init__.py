"""Scenario lane: real PostgreSQL clusters, syncd in-process."""
