"""The package version, on the lowest floor so that any module may record it (model files, exports)."""

__version__ = "0.1.0"
