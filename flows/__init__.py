"""Prefect flows: composition, fan-out, summaries and artifacts."""
