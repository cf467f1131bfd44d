"""Prefect task wrappers: retries, caching policy and logging around vulnattest's domain calls."""
