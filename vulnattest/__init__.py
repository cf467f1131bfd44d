"""vulnattest: keep a fresh, signed vulnerability scan attached to every container image of a fleet."""

__version__ = "0.1.0"
