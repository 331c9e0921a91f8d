"""Copying snapshots between repositories (the ``copy`` command): see pipeline.py."""
