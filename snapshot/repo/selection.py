"""Which snapshot a reference names: ``latest``, a full id or a unique id prefix, among the
snapshots that pass restic's filters (``--tag``, ``--host``, ``--path``).

Pure: :class:`snapshot.repo.repository.Repository` hands in the ids and, when there are filters, the
facts of each candidate (read from its root), newest first, as they are needed.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from snapshot.errors import AmbiguousIdError, NotFoundError, UsageError

LATEST = "latest"


@dataclass(frozen=True)
class SnapshotFacts:
    """What the filters look at in one snapshot."""

    id: str
    tags: tuple[str, ...] = ()
    host: str = ""
    path: str = ""


@dataclass(frozen=True)
class SnapshotFilter:
    """restic's semantics: a snapshot passes when it has every tag of at least one of ``tags``
    (``--tag a,b --tag c``: a and b, or c), was taken on one of ``hosts`` and of one of
    ``paths``; an empty field does not filter."""

    tags: tuple[tuple[str, ...], ...] = ()
    hosts: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()

    @classmethod
    def parse(cls, tags: Sequence[str] = (), hosts: Sequence[str] = (),
              paths: Sequence[str] = ()) -> SnapshotFilter:
        """From the option values (``--tag a,b`` is one group); an empty value is refused."""
        groups = parse_tag_options(tags, "--tag")
        for option, values in (("--host", hosts), ("--path", paths)):
            if any(not v.strip() for v in values):
                raise UsageError(f"bad {option}: empty value")
        return cls(tuple(groups), tuple(hosts), tuple(paths))

    def __bool__(self) -> bool:
        return bool(self.tags or self.hosts or self.paths)

    def matches(self, s: SnapshotFacts) -> bool:
        if self.tags and not any(set(group) <= set(s.tags) for group in self.tags):
            return False
        if self.hosts and s.host not in self.hosts:
            return False
        return not self.paths or _norm(s.path) in {_norm(p) for p in self.paths}

    def describe(self) -> str:
        """The filters as options, for messages: ``--tag nightly --host gpu-box``."""
        parts = [f"--tag {','.join(g)}" for g in self.tags]
        parts += [f"--host {h}" for h in self.hosts] + [f"--path {p}" for p in self.paths]
        return " ".join(parts)


def _norm(path: str) -> str:
    return posixpath.normpath(path) if path else path


def candidates(ref: str, ids: Sequence[str]) -> list[str]:
    """The ids ``ref`` can name, newest first: every id for ``latest``, else the id itself
    or every id it is a prefix of."""
    if not ref:
        raise UsageError("empty snapshot id")
    if ref == LATEST:
        return sorted(ids, reverse=True)
    if ref in ids:
        return [ref]
    return sorted((i for i in ids if i.startswith(ref)), reverse=True)


def choose(ref: str, found: Iterable[SnapshotFacts], filters: SnapshotFilter, where: str) -> str:
    """The id ``ref`` names among ``found`` (its :func:`candidates`, newest first) that pass
    ``filters``: for ``latest`` the first (``found`` is read no further), else the only one.
    ``where`` (the repository) is named in the errors."""
    matched: list[str] = []
    seen = 0
    for s in found:
        seen += 1
        if filters.matches(s):
            if ref == LATEST:
                return s.id
            matched.append(s.id)
    with_filters = f" with {filters.describe()}" if filters else ""
    if not matched:
        if ref == LATEST and not seen:
            raise NotFoundError(f"no snapshots in {where}")
        if ref == LATEST:
            raise NotFoundError(f"no snapshot{with_filters} in {where}")
        raise NotFoundError(f"no snapshot matches {ref!r}{with_filters} in {where}")
    if len(matched) > 1:
        oldest_first = sorted(matched)
        shown = ", ".join(oldest_first[:5]) + (" ..." if len(matched) > 5 else "")
        raise AmbiguousIdError(f"{ref!r} matches {len(matched)} snapshots{with_filters}: {shown}")
    return matched[0]


def parse_tag_options(values: Sequence[str], option: str = "--keep-tag") -> tuple[tuple[str, ...], ...]:
    """``--keep-tag a,b --keep-tag c`` -> ((a, b), (c,)); empty tags are refused."""
    out = []
    for v in values:
        tags = tuple(t.strip() for t in v.split(","))
        if not all(tags):
            raise UsageError(f"bad {option} {v!r}: empty tag")
        out.append(tags)
    return tuple(out)
