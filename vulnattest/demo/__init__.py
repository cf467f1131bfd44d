"""Offline demo material: a small advisory DB and scannable images built in memory."""
