"""The package version (read by packaging and written into every manifest)."""

__version__ = "0.2.0"
