"""Reading, writing and re-checking a repository's config.json, for Repository.

Unencrypted, it is the plain JSON of :class:`RepoConfig` (format_version 1). Encrypted, it is an
envelope (format_version 2, snapshot/format/crypto.py) holding only what a reader needs before it has
the key (the repository id, the algorithms) and the same settings JSON sealed with the master
key, which a password unlocks through one of the key files (snapshot/repo/keys.py).
"""

from __future__ import annotations

import secrets
import warnings
from dataclasses import dataclass
from typing import Any

from snapshot.errors import AlreadyExistsError, IntegrityError, UsageError
from snapshot.format import crypto, layout
from snapshot.format.chunking import DEFAULT_CHUNK_SIZE, check_chunk_size
from snapshot.format.codecs import DEFAULT_LEVELS, check_codec
from snapshot.format.ids import utc_now_iso
from snapshot.format.manifest import (
    CONFIG_VERSION,
    LOCK_MODES,
    MAX_LOCK_DAYS,
    LockSetting,
    RepoConfig,
    dumps,
    parse_config,
)
from snapshot.repo import keys as keyfiles
from snapshot.repo.keys import KeySource
from snapshot.storage.base import ObjectKind, ObjectLock, Store
from snapshot.util import pausepoints

DEFAULT_CODEC = "zstd"
#: Frames per delta chain at most (each chunk has its own limit from 3/4 of this up: chains.py).
DEFAULT_MAX_CHAIN = 16


@dataclass(frozen=True)
class OpenedConfig:
    """A repository's config as this process opened it: its settings, and for an encrypted one
    the cipher its master key makes and the key file that gave the master key."""

    config: RepoConfig
    cipher: crypto.Cipher | None = None
    key_id: str | None = None


def check_settings(chunk_size: int | None, codec: str | None, level: int | None) -> None:
    if chunk_size is not None:
        check_chunk_size(chunk_size)
    if codec is not None or level is not None:
        codec_ = codec or DEFAULT_CODEC
        check_codec(codec_, level if level is not None else DEFAULT_LEVELS[codec_])


def refuse_other_settings(opened: OpenedConfig, url: str, chunk_size: int | None, codec: str | None,
                          encrypt: bool, object_lock: LockSetting | None = None) -> None:
    """Refuse settings given for the repository at ``url``, which exists, that differ from its own
    (they apply only when a repository is initialised)."""
    has = opened.config
    if object_lock is not None and object_lock != has.object_lock:
        lock = has.object_lock
        now = f"{lock.mode.lower()} for {lock.days} days" if lock else "none"
        raise UsageError(f"this repository's Object Lock is {now}; --object-lock-days and "
                         "--object-lock-mode apply only when init or a first create initialises a "
                         "repository")
    if encrypt and opened.cipher is None:
        raise UsageError(
            f"the repository at {url} exists and is not encrypted; --encrypt applies only when a "
            "create initialises a repository"
        )
    if chunk_size is not None and chunk_size != has.chunk_size:
        raise UsageError(
            f"this repository's chunk size is {has.chunk_size}; --chunk-size applies "
            "only when a create initialises a repository"
        )
    if codec is not None and codec != has.codec:
        raise UsageError(
            f"this repository's codec is {has.codec}; --codec applies only when a "
            "create initialises a repository"
        )


def lock_setting(days: int | None, mode: str | None) -> LockSetting | None:
    """``--object-lock-days N [--object-lock-mode M]`` as a setting (None: neither given)."""
    if days is None:
        if mode is not None:
            raise UsageError("--object-lock-mode needs --object-lock-days")
        return None
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_LOCK_DAYS:
        raise UsageError(f"--object-lock-days must be a whole number of days from 1 to {MAX_LOCK_DAYS}, "
                         f"not {days!r}")
    mode = (mode or "governance").upper()
    if mode not in LOCK_MODES:
        raise UsageError(f"--object-lock-mode must be governance or compliance, not {mode.lower()!r}")
    return LockSetting(mode, days)


def use_lock(store: Store, setting: LockSetting | None, *, check_bucket: bool = False) -> None:
    """Tell ``store`` the repository's Object Lock (it then retains packs, roots and the config)."""
    if setting is not None:
        store.use_object_lock(ObjectLock(setting.mode, setting.days), check_bucket=check_bucket)


def _open_settings(envelope: crypto.Envelope, master: bytes, what: str) -> RepoConfig:
    """The settings an envelope seals, opened with ``master`` (IntegrityError if that is not
    the master key they were sealed with, or they were altered)."""
    raw = crypto.Cipher(master, envelope.id).open_settings(envelope.settings)
    config = parse_config(raw, what)
    if config.id != envelope.id:
        raise IntegrityError(f"{what}: its sealed settings belong to repository {config.id}")
    return config


def load(store: Store, raw: bytes, key_source: KeySource | None) -> OpenedConfig:
    """The repository whose config.json holds ``raw``; an encrypted one is unlocked with the
    password ``key_source`` gives (asked for only then)."""
    what = f"repository config at {store.url}"
    envelope = crypto.parse_envelope(raw, what, (CONFIG_VERSION,))
    if envelope is None:
        config = parse_config(raw, what)
        if key_source is not None and key_source.explicit:
            raise UsageError(
                f"a password was given, but the repository at {store.url} is not encrypted: refusing to "
                "use it (its config may have been replaced); for an unencrypted repository give no password"
            )
        return OpenedConfig(config)
    if key_source is None:
        raise UsageError(f"the repository at {store.url} is encrypted: a password is needed")
    password = key_source.read(False)
    key_id, master, config = keyfiles.unlock(store, password, lambda mk: _open_settings(envelope, mk, what))
    return OpenedConfig(config, crypto.Cipher(master, envelope.id), key_id)


def initialise(
    store: Store, chunk_size: int | None, codec: str | None, level: int | None, max_chain: int | None,
    encrypt: bool, key_source: KeySource | None, object_lock: LockSetting | None = None,
) -> OpenedConfig:
    """Write the config of a new repository (create-only; if another process initialised it
    first, theirs is loaded instead: the caller compares the settings). With ``object_lock``
    the bucket is asked first whether it has Object Lock (UsageError if not), and the config
    is written under it."""
    if not encrypt and key_source is not None and key_source.explicit:
        raise UsageError(
            "a password was given, but this would initialise an unencrypted repository: add --encrypt "
            "(or give no password)"
        )
    if encrypt and key_source is None:
        raise UsageError("encrypting a new repository needs a password")
    # Key files alone are what an encrypted initialisation left when it was killed before its config.
    if next((i for i in store.list("") if not i.key.startswith(layout.KEYS_PREFIX)), None) is not None:
        raise UsageError(f"{store.url} is not empty and holds no chroma-snapshot repository (no config.json)")
    use_lock(store, object_lock, check_bucket=True)
    codec = codec or DEFAULT_CODEC
    config = RepoConfig(
        id=secrets.token_hex(16),
        chunk_size=chunk_size or DEFAULT_CHUNK_SIZE,
        codec=codec,
        level=level if level is not None else DEFAULT_LEVELS[codec],
        max_chain=max_chain or DEFAULT_MAX_CHAIN,
        created_at=utc_now_iso(),
        object_lock=object_lock,
    )
    opened = OpenedConfig(config)
    data = dumps(config)
    if encrypt:
        assert key_source is not None
        password = keyfiles.check_password(key_source.read(True))
        cipher = crypto.Cipher(crypto.new_master_key(), config.id)
        # the key first: a repository is never keyless
        opened = OpenedConfig(config, cipher, keyfiles.add_key(store, cipher, password))
        pausepoints.point("repository.key-written")
        data = crypto.Envelope(config.id, cipher.seal_settings(data)).to_json()
    try:
        store.put(layout.CONFIG_KEY, data, kind=ObjectKind.CONFIG, create_only=True)
    except AlreadyExistsError:  # another process initialised it first: use theirs
        if opened.key_id is not None:
            pausepoints.point("repository.init-lost")
            keyfiles.delete_key(store, opened.key_id)  # it wraps a master key nobody uses
        return load(store, store.get(layout.CONFIG_KEY), key_source)
    if opened.cipher is not None and opened.key_id is not None:
        pausepoints.point("repository.config-written")
        keyfiles.sweep_orphans(store, opened.cipher, opened.key_id)
    return opened


def verify(store: Store, opened: OpenedConfig) -> None:
    """Re-read config.json: raises what is wrong with it, or what changed since it was ``opened``."""
    raw = store.get(layout.CONFIG_KEY)
    what = "repository config"
    envelope = crypto.parse_envelope(raw, what, (CONFIG_VERSION,))
    if opened.cipher is None:
        if envelope is not None:
            raise IntegrityError(f"{what}: it is encrypted now, but was not when this command started")
        parse_config(raw, what)
        return
    if envelope is None:
        raise IntegrityError(f"{what}: it is not encrypted any more (replaced by a plaintext config?)")
    if envelope.id != opened.config.id:
        raise IntegrityError(f"{what}: its repository id changed to {envelope.id}")
    _open_settings(envelope, opened.cipher.master_key, what)


def __getattr__(name: str) -> Any:
    if name == "Access":  # the name before 0.3
        warnings.warn("snapshot.repo.config.Access is now OpenedConfig", DeprecationWarning, stacklevel=2)
        return OpenedConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
