"""Everything that knows Chroma's files: its SQLite schema and queries, consistent capture of a
live persist dir, the capture-time consistency proof, the segment and id-map readers, which
directories look like a persist dir, what a restore must know of them (restore_rules: the order
to write them in, the consistency re-check, the schema warning), the chromadb trial open of
a restored directory, and copying collections into a user's persist dir or a running server
through chromadb's client (transfer, in a child process: transfer_child, transfer_journal,
copy_verify; holders: who has a persist dir open).
"""
