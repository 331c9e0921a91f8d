"""The key files of an encrypted repository, ``keys/<id>``: each holds the repository's master
key wrapped by one password (formats in snapshot/format/crypto.py). Opening an encrypted repository
tries the password on each key file; ``key add``, ``key remove`` and ``key passwd`` manage them.

Below Repository, like snapshot/repo/locks.py: these functions take the store, and Repository is
the one that calls them.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from snapshot.errors import (
    AmbiguousIdError,
    FormatVersionError,
    IntegrityError,
    NotFoundError,
    SnapshotError,
    UsageError,
    WrongPasswordError,
)
from snapshot.format import crypto, layout
from snapshot.format.ids import utc_now_iso
from snapshot.storage.base import ObjectKind, Store

T = TypeVar("T")


@dataclass(frozen=True)
class KeySource:
    """Where a password comes from. ``read(new)`` returns it (``new``: it is to protect a new
    key, so a prompt asks twice); it is called only once a repository turns out to be encrypted.

    ``explicit``: the user configured it (a file, a variable, a command). An unencrypted
    repository is then refused: a bucket writer could have replaced an encrypted repository's
    config by a plaintext one, to read what the next create writes or to serve forged snapshots.
    """

    read: Callable[[bool], bytes]
    explicit: bool = True

    @classmethod
    def of(cls, password: str | bytes) -> KeySource:
        """A fixed password (for library callers)."""
        secret = password.encode("utf-8") if isinstance(password, str) else password
        return cls(lambda new: secret)


@dataclass(frozen=True)
class KeyInfo:
    id: str
    #: The key the password in use opened.
    current: bool
    created: str
    host: str
    kdf: str
    #: Why the key's info could not be read (damaged, or sealed by another master key).
    error: str | None = None
    #: Its info does not open with this repository's master key (see ORPHANED).
    orphaned: bool = False


#: What `key list` says of a key whose info does not open with the repository's master key.
ORPHANED = ("its info does not open with this repository's master key: left by an interrupted init, "
            "or altered; `key remove` it")


def check_password(password: bytes) -> bytes:
    if not password:
        raise UsageError("empty password: refusing to use it")
    return password


def key_ids(store: Store) -> list[str]:
    ids = []
    for info in store.list(layout.KEYS_PREFIX):
        kid = layout.key_id_from_key(info.key)
        if kid is not None:
            ids.append(kid)
    return sorted(ids)


def read_key(store: Store, key_id: str) -> crypto.KeyFile:
    try:
        raw = store.get(layout.key_key(key_id))
    except NotFoundError:
        raise NotFoundError(f"key {key_id} not found in {store.url}") from None
    return crypto.parse_key_file(raw, key_id)


def _by_cost(store: Store, ids: list[str]) -> tuple[list[tuple[str, crypto.KeyFile]], list[str], list[str]]:
    """(the keys a password may be tried on, cheapest first; the keys refused for their cost;
    the unreadable ones), the last two as text for messages."""
    usable: list[tuple[str, crypto.KeyFile]] = []
    costly: list[str] = []
    unreadable: list[str] = []
    for kid in ids:
        try:
            kf = read_key(store, kid)
        except (IntegrityError, NotFoundError, FormatVersionError) as exc:  # another key may open
            unreadable.append(f"{kid[:8]} ({exc})")
            continue
        if kf.params.too_costly():  # anyone who can write to the bucket can add such a key
            costly.append(f"{kid[:8]} ({kf.params.describe()})")
        else:
            usable.append((kid, kf))
    # Cheapest first: a costly key is derived only when no cheaper one opens.
    usable.sort(key=lambda k: (k[1].params.work, k[1].params.memory, k[0]))
    return usable, costly, unreadable


def unlock(store: Store, password: bytes, accept: Callable[[bytes], T]) -> tuple[str, bytes, T]:
    """(key id, master key, ``accept(master key)``) of the cheapest key that ``password`` opens
    and whose master key ``accept`` takes (it opens the config's settings; it raises
    IntegrityError for a master key that does not: a key of another repository, left by an
    initialisation that lost a race). Keys costlier to derive than crypto.costliest() are not
    tried. Raises WrongPasswordError when no key opens."""
    check_password(password)
    ids = key_ids(store)
    if not ids:
        raise IntegrityError(f"the repository at {store.url} is encrypted but holds no key (keys/ is empty)")
    usable, costly, unreadable = _by_cost(store, ids)
    rejected: SnapshotError | None = None
    for kid, kf in usable:
        master = crypto.unwrap_key(kf, kid, password)
        if master is None:
            continue
        try:
            return kid, master, accept(master)
        except IntegrityError as exc:
            rejected = exc
    if rejected is not None:
        raise rejected
    if usable:
        tried = ", ".join(k[:8] for k, _ in usable[:5]) + (" ..." if len(usable) > 5 else "")
        message = (f"wrong password: none of the {len(usable)} key(s) of {store.url} tried opens with it "
                   f"(tried {tried}; if the password is right, the key file was altered)")
    else:
        message = f"no key of {store.url} could be tried with the password"
    if costly:
        message += f"; refused for their cost, not tried: {', '.join(costly)} ({crypto.cost_limit()})"
    if unreadable:
        message += f"; unreadable: {'; '.join(unreadable)}"
    raise WrongPasswordError(message)


def add_key(store: Store, cipher: crypto.Cipher, password: bytes) -> str:
    """Wrap the master key with ``password`` in a new key file (create-only); its id."""
    check_password(password)
    key_id = secrets.token_hex(16)
    kf = crypto.wrap_key(cipher, key_id, password, {"created": utc_now_iso(), "host": socket.gethostname()})
    store.put(layout.key_key(key_id), kf.to_json(), kind=ObjectKind.KEY, create_only=True)
    return key_id


def delete_key(store: Store, key_id: str) -> None:
    store.delete(layout.key_key(key_id))


def describe_keys(store: Store, cipher: crypto.Cipher, current: str | None) -> list[KeyInfo]:
    out = []
    for kid in key_ids(store):
        try:
            kf = read_key(store, kid)
        except (IntegrityError, NotFoundError, FormatVersionError) as exc:
            out.append(KeyInfo(kid, kid == current, "", "", "", str(exc)))
            continue
        kdf = kf.params.describe() + (" (refused for its cost: not tried)" if kf.params.too_costly() else "")
        try:
            info = cipher.open_key_info(kid, kf.info)
        except IntegrityError:
            out.append(KeyInfo(kid, kid == current, "", "", kdf, ORPHANED, orphaned=True))
            continue
        out.append(KeyInfo(kid, kid == current, str(info.get("created", "")), str(info.get("host", "")), kdf))
    return out


def sweep_orphans(store: Store, cipher: crypto.Cipher, ours: str) -> list[str]:
    """Delete the key files a new repository's config found beside its own key: left by an
    initialisation killed between its key and its config (or that lost a race and was killed
    before removing its key). Run only once this repository's config is written: from then on
    every legitimate key is sealed with ``cipher``'s master key. The ids deleted."""
    swept = []
    for kid in key_ids(store):
        if kid == ours:
            continue
        try:
            cipher.open_key_info(kid, read_key(store, kid).info)
        except NotFoundError:
            continue
        except (IntegrityError, FormatVersionError):
            delete_key(store, kid)
            swept.append(kid)
    return swept


def resolve_key(store: Store, ref: str) -> str:
    ids = key_ids(store)
    matches = [k for k in ids if k.startswith(ref)] if ref else []
    if ref in ids:
        return ref
    if not matches:
        raise NotFoundError(f"no key matches {ref!r} in {store.url}")
    if len(matches) > 1:
        raise AmbiguousIdError(f"{ref!r} matches {len(matches)} keys: {', '.join(matches[:5])}")
    return matches[0]


def remove_key(
    store: Store, cipher: crypto.Cipher, ref: str, current: str, password: Callable[[], bytes]
) -> str:
    """Delete key ``ref`` (an id or unique prefix); its id. Refused for the last key, and for
    the key in use unless the password in use (asked for only then) also opens another key."""
    key_id = resolve_key(store, ref)
    others = [k for k in key_ids(store) if k != key_id]
    if not others:
        raise UsageError(f"refusing to remove key {key_id}: it is the repository's last key")
    if key_id == current and not _opens_another(store, others, password(), cipher.master_key):
        raise UsageError(
            f"refusing to remove key {key_id}: it is the key this password opens, and no other key opens "
            "with it; run `key remove` with another key's password, or `key passwd` to replace it"
        )
    delete_key(store, key_id)
    return key_id


def _opens_another(store: Store, others: list[str], password: bytes, master: bytes) -> bool:
    for key_id in others:
        try:
            kf = read_key(store, key_id)
        except (IntegrityError, NotFoundError, FormatVersionError):
            continue
        if crypto.unwrap_key(kf, key_id, password) == master:
            return True
    return False
