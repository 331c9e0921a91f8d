"""Keeping a repository small and sound: retention, prune (two-phase deletion), repack and
``check`` (verify).
"""
