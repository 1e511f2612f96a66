"""The package version, recorded in every output file and manifest record."""

__version__ = "0.2.0"
