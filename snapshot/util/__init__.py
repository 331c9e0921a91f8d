"""Helpers with no knowledge of repositories or Chroma: durability (fsync), pause points,
progress reporting and owned temporary directories.
"""
