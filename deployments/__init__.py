"""Deployments of vulnattest's flows: schedules, concurrency limits, and serving them from one process."""
