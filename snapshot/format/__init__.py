"""The repository format: bytes and JSON only, no storage I/O.

Manifests and their validating parser, storage keys (layout), snapshot ids, content hashes,
the chunking rule, chunk tables, delta chains, frame codecs, the crypto formats and the
condemned-pack records. Everything here is pure: it imports nothing but :mod:`snapshot.errors`,
:mod:`snapshot.version` and :mod:`snapshot.util`.
"""
