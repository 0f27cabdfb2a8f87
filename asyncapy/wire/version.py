"""The package version, in the bottom layer so that any layer may name it (the tracer does)."""

__version__ = "0.1.0"
