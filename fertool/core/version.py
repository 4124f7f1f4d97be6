"""fertool's version (read by setuptools and recorded in every run, report and export)."""

__version__ = "0.1.0"
