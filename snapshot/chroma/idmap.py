"""Reading a vector segment's ``index_metadata.pickle`` (its id map) without trusting it.

The file comes from a source directory or a repository, so it is hostile input. Python's
unpickler builds whatever the opcodes say: a tuple nested a million deep crashes the process
when it is hashed, a memo index of 2**31 allocates gigabytes, a global runs code. So the
opcodes are scanned first, before anything is built: only the opcodes chromadb's writers emit
(Python's pickle of ``PersistentData`` and the plain dict chromadb >= 1.0 writes) are allowed,
containers nest at most :data:`MAX_DEPTH` deep, at most :data:`MAX_CONTAINERS` of them exist, a
container is never taken back from the memo (so nothing is changed after it was placed, and
nothing refers to itself), memo indices grow one at a time, and every length fits the file.
What is built is then bounded by the file's size (about twenty times it at worst: a 3-byte
integer opcode builds a 28-byte int). Every refusal is an
:class:`IntegrityError` naming the file.
"""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path
from typing import Any

from snapshot.errors import IntegrityError

PICKLE = "index_metadata.pickle"
#: chromadb's maps nest 2 deep (3 inside PersistentData); anything deeper is not an id map.
MAX_DEPTH = 8
#: chromadb writes one object and four or five dicts.
MAX_CONTAINERS = 64
#: max_seq_id and labels are 64-bit in chromadb; LONG1 longer than this is not one of them.
_MAX_LONG1 = 9

_U4 = struct.Struct("<I")
_U8 = struct.Struct("<Q")
_I4 = struct.Struct("<i")


class _Stub:
    """Stands in for the one class older chromadb pickled (its fields land in __dict__)."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)


class _SafeUnpickler(pickle.Unpickler):
    """Plain data only: an index_metadata.pickle read from a repository must not run code."""

    def find_class(self, module: str, name: str) -> Any:
        if name == "PersistentData" and module.startswith("chromadb."):
            return _Stub
        raise pickle.UnpicklingError(f"{PICKLE} refers to {module}.{name}, which is not plain data")


# opcodes that push a scalar -> the bytes of their argument
_SCALARS = {
    ord("N"): 0, 0x88: 0, 0x89: 0,  # NONE, NEWTRUE, NEWFALSE
    ord("K"): 1, ord("M"): 2, ord("J"): 4, ord("G"): 8,  # BININT1, BININT2, BININT, BINFLOAT
}
_NAMES = {v: k for k, v in pickle.__dict__.items() if isinstance(v, bytes) and len(v) == 1 and k.isupper()}


class _Scan:
    """One pass over the opcodes, tracking per stack item how deeply it nests (0: a scalar)."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.what = what
        self.stack: list[int] = []
        self.marks: list[int] = []
        self.memo: list[int] = []
        self.containers = 0

    def fail(self, pos: int, msg: str) -> IntegrityError:
        return IntegrityError(f"{self.what} is not a chromadb id map: {msg} (byte {pos})")

    def _pop_mark(self, pos: int) -> int:
        """Pop the items above the last mark; the deepest of them."""
        if not self.marks:
            raise self.fail(pos, "items without a mark")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return max(items, default=0)

    def _pop(self, pos: int, n: int = 1) -> int:
        floor = self.marks[-1] if self.marks else 0
        if len(self.stack) - n < floor:
            raise self.fail(pos, "stack underflow")
        items = self.stack[-n:]
        del self.stack[-n:]
        return max(items)

    def _nest(self, pos: int, target: int, inner: int) -> None:
        """Put items nesting ``inner`` deep into the container at ``stack[target]``."""
        depth = max(self.stack[target], inner + 1)
        if depth > MAX_DEPTH:
            raise self.fail(pos, f"nested deeper than {MAX_DEPTH}")
        self.stack[target] = depth

    def _new(self, pos: int, depth: int) -> None:
        self.containers += 1
        if self.containers > MAX_CONTAINERS:
            raise self.fail(pos, f"more than {MAX_CONTAINERS} containers")
        if depth > MAX_DEPTH:
            raise self.fail(pos, f"nested deeper than {MAX_DEPTH}")
        self.stack.append(depth)

    def run(self) -> None:
        try:
            self._run()
        except (struct.error, IndexError):  # an argument cut off by the end of the file
            raise self.fail(len(self.data), "ends before its STOP (truncated)") from None

    def _run(self) -> None:
        """One dispatch on the opcode, the frequent ones first (most of a file is id strings
        and labels)."""
        d, n, stack, memo, push = self.data, len(self.data), self.stack, self.memo, self.stack.append
        u4 = _U4.unpack_from
        scalars = _SCALARS
        pos = 0
        # Lengths are not checked one by one: an argument running past the end leaves the
        # loop (pos > n) or fails to unpack (struct.error), both "truncated".
        while pos < n:
            op = d[pos]
            if op == 0x58:  # BINUNICODE, most often followed by its label (BININT)
                pos += 5 + u4(d, pos + 1)[0]
                push(0)
                if pos < n and d[pos] == 0x4A:
                    pos += 5
                    push(0)
            elif op == 0x4A:  # BININT, most often followed by its id (BINUNICODE)
                pos += 5
                push(0)
                if pos < n and d[pos] == 0x58:
                    pos += 5 + u4(d, pos + 1)[0]
                    push(0)
            elif (width := scalars.get(op)) is not None:
                pos += 1 + width
                push(0)
            elif op == 0x8C:  # SHORT_BINUNICODE
                pos += 2 + d[pos + 1]
                push(0)
            elif op == 0x94:  # MEMOIZE
                if not stack:
                    raise self.fail(pos, "nothing to memoize")
                memo.append(stack[-1])
                pos += 1
            elif op == 0x68 or op == 0x6A:  # BINGET, LONG_BINGET
                index = d[pos + 1] if op == 0x68 else u4(d, pos + 1)[0]
                if index >= len(memo):
                    raise self.fail(pos, "a memo index that was never set")
                if memo[index]:
                    raise self.fail(pos, "a container taken again from the memo")
                pos += 2 if op == 0x68 else 5
                push(0)
            else:
                pos = self._rare(op, pos)
                if pos < 0:
                    return
        raise self.fail(n, "ends before its STOP (truncated)")

    def _target(self, pos: int, what: str) -> None:
        """The item below what was just popped must be a container above the last mark."""
        if not self.stack or self.stack[-1] == 0 or (self.marks and len(self.stack) <= self.marks[-1]):
            raise self.fail(pos, f"{what} for no container")

    def _rare(self, op: int, pos: int) -> int:
        """The opcodes met a few times per file; the position after ``op``, -1 after STOP."""
        d, n, stack = self.data, len(self.data), self.stack
        if op == 0x28:  # MARK
            if len(self.marks) >= MAX_DEPTH:
                raise self.fail(pos, f"marks nested deeper than {MAX_DEPTH}")
            self.marks.append(len(stack))
        elif op == 0x75 or op == 0x65:  # SETITEMS, APPENDS
            inner = self._pop_mark(pos)
            self._target(pos, "items")
            self._nest(pos, -1, inner)
        elif op == 0x73 or op == 0x61:  # SETITEM, APPEND
            inner = self._pop(pos, 2 if op == 0x73 else 1)
            self._target(pos, "an item")
            self._nest(pos, -1, inner)
        elif op in (0x7D, 0x5D, 0x29):  # EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE
            self._new(pos, 1)
        elif op == 0x74:  # TUPLE
            self._new(pos, self._pop_mark(pos) + 1)
        elif op in (0x85, 0x86, 0x87):  # TUPLE1..3
            self._new(pos, self._pop(pos, op - 0x84) + 1)
        elif op == 0x71 or op == 0x72:  # BINPUT, LONG_BINPUT
            index = d[pos + 1] if op == 0x71 else _I4.unpack_from(d, pos + 1)[0]
            if not stack or not 0 <= index <= len(self.memo):
                raise self.fail(pos, "a memo index out of order")
            if index == len(self.memo):
                self.memo.append(stack[-1])
            else:
                self.memo[index] = stack[-1]
            return pos + (2 if op == 0x71 else 5)
        elif op == 0x8A:  # LONG1
            if d[pos + 1] > _MAX_LONG1:
                raise self.fail(pos, "an integer too long for an id map")
            stack.append(0)
            return pos + 2 + d[pos + 1]
        elif op == 0x8D:  # BINUNICODE8
            stack.append(0)
            return pos + 9 + int(_U8.unpack_from(d, pos + 1)[0])
        elif op == 0x93:  # STACK_GLOBAL: the class itself is judged by find_class
            self._pop(pos, 2)
            self._new(pos, 1)
        elif op == 0x63:  # GLOBAL: module and name, a line each
            end = pos + 1
            for _ in range(2):
                line = d.find(b"\n", end, end + 256)
                if line < 0:
                    raise self.fail(pos, "a global name without an end")
                end = line + 1
            self._new(pos, 1)
            return end
        elif op == 0x81:  # NEWOBJ: class, args -> object
            self._new(pos, self._pop(pos, 2) + 1)
        elif op == 0x62:  # BUILD: object, state -> object
            state = self._pop(pos)
            self._target(pos, "state")
            self._nest(pos, -1, state)
        elif op == 0x80:  # PROTO
            if pos != 0 or not 2 <= d[pos + 1] <= 5:
                raise self.fail(pos, "an unknown protocol")
            return pos + 2
        elif op == 0x95:  # FRAME: only a length hint, but not past the end
            if _U8.unpack_from(d, pos + 1)[0] > n - pos - 9:
                raise self.fail(pos, "a frame longer than the file")
            return pos + 9
        elif op == 0x2E:  # STOP
            if len(stack) != 1 or self.marks:
                raise self.fail(pos, "ends with other than one object")
            if pos + 1 != n:
                raise self.fail(pos, f"{n - pos - 1} bytes after the end")
            return -1
        else:
            name = _NAMES.get(bytes([op]), f"byte 0x{op:02x}")
            raise self.fail(pos, f"opcode {name} is not plain data chromadb writes")
        return pos + 1


def scan(data: bytes, what: str = PICKLE) -> None:
    """Refuse (IntegrityError) pickle bytes that are not shaped like a chromadb id map."""
    _Scan(data, what).run()


def load(data: bytes, what: str = PICKLE) -> Any:
    """The object pickled in ``data``, built only after :func:`scan` accepted it."""
    scan(data, what)
    try:
        # Buffered: the unpickler then reads ahead instead of calling read() per opcode.
        return _SafeUnpickler(io.BufferedReader(io.BytesIO(data), 1 << 16)).load()
    except Exception as exc:  # bounded by the scan; anything left is a damaged file
        raise IntegrityError(f"{what}: {exc}") from exc


def id_map(data: bytes, what: str = PICKLE) -> tuple[dict[str, int], int]:
    """The index's id map and the max_seq_id it records (0 if none: chromadb >= 1.0 keeps it
    in chroma.sqlite3 instead), from the bytes of an index_metadata.pickle."""
    obj = load(data, what)
    fields = obj if isinstance(obj, dict) else getattr(obj, "__dict__", {})
    id_to_label = fields.get("id_to_label")
    label_to_id = fields.get("label_to_id")
    if not isinstance(id_to_label, dict) or not isinstance(label_to_id, dict):
        raise IntegrityError(f"{what} has no id maps")
    if len(id_to_label) != len(label_to_id):
        sizes = f"{len(id_to_label)} vs {len(label_to_id)}"
        raise IntegrityError(f"{what}: its two id maps differ in size ({sizes})")
    if not all(type(k) is str for k in id_to_label):
        raise IntegrityError(f"{what}: an id that is not a string")
    seq = fields.get("max_seq_id")
    return id_to_label, seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 0 else 0


def read_id_map(path: Path, what: str = PICKLE) -> tuple[dict[str, int], int]:
    """:func:`id_map` of the file at ``path`` (read whole: what it holds is about ten times
    larger, and a file that is only scanned cannot change before it is loaded)."""
    return id_map(path.read_bytes(), what)
