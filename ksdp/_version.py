"""The package version, at the bottom of the import graph (``ksdp.data`` stores it in every dataset)."""

__version__ = "0.1.0"
