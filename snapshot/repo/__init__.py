"""A repository on a store: :class:`Repository` (the one owner of every read and write), its
config and key files, locks, packs (writing and reading frames) and snapshot selection.
"""
