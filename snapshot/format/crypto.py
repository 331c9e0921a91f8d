"""All cryptography of chroma-snapshot: the key derivation, the master key, sealing and opening
with associated data, and the two formats that hold key material (key files and the config of
an encrypted repository). No I/O here; Repository applies it and snapshot/repo/keys.py stores keys.

* **Sealed bytes** are ``nonce (12 random bytes) || AES-256-GCM ciphertext || tag (16 bytes)``:
  28 bytes more than the plaintext. Every seal draws a fresh random nonce.
* **Associated data** names what the plaintext is, so that a sealed object moved, renamed or
  copied from another repository does not open: ``chroma-snapshot\\0<kind>\\0<part>...`` with
  kind ``config`` (repository id), ``root`` (repository id, snapshot id), ``frame`` and
  ``table`` (repository id, codec, decoded size, content hash), ``key`` (key id) and
  ``key-info`` (repository id, key id).
* **Passwords** wrap the master key through scrypt; its parameters and salt are stored in each
  key file, so they can be raised later without touching existing keys.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from snapshot.errors import FormatVersionError, IntegrityError, UsageError
from snapshot.format import layout
from snapshot.format.manifest import Frame

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ALGORITHM = "AES-256-GCM"
KDF = "scrypt"
NONCE = 12
TAG = 16
#: Bytes a sealed object is longer than its plaintext.
OVERHEAD = NONCE + TAG
MASTER_KEY_BYTES = 32
SALT_BYTES = 32

#: scrypt cost for new keys: N = 2**15, r = 8, p = 1 takes ~0.08 s and 32 MiB to derive on a
#: 2-core EPYC (restic's calibration caps its memory at 60 MiB, which also gives N = 2**15).
#: ``CHROMA_SNAPSHOT_SCRYPT_LOG_N`` (10..22) sets another cost for keys made from then on.
DEFAULT_LOG_N = 15
DEFAULT_R = 8
DEFAULT_P = 1
#: Lowers N for new keys (tests only: a test suite deriving keys at full cost would crawl).
#: Existing keys always use the parameters stored in them.
LOG_N_ENV = "CHROMA_SNAPSHOT_SCRYPT_LOG_N"
_LOG_N_RANGE = (10, 22)
#: The costliest key a reader derives is the costliest one the writer makes: N = 2**READ_LOG_N
#: (or ``CHROMA_SNAPSHOT_SCRYPT_LOG_N``'s N, if higher), r = 8, p = 1. At 2**20 that is 1 GiB
#: and ~6 s; a key object asking for more memory (128·r·N) or more work (N·r·p) is refused
#: without deriving, since anyone who can write to the bucket can put one there.
READ_LOG_N = 20

CONFIG_VERSION_ENCRYPTED = 2
KEY_FILE_VERSION = 1


def _aad(kind: str, *parts: str) -> bytes:
    return "\0".join(("chroma-snapshot", kind, *parts)).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise IntegrityError(f"{what} is not base64 text")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise IntegrityError(f"{what} is not base64") from exc


def _load_json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # also a number of more than 4300 digits
        raise IntegrityError(f"{what} is not valid JSON") from exc
    if not isinstance(data, dict):
        raise IntegrityError(f"{what} is not a JSON object")
    return data


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def _aesgcm(key: bytes) -> AESGCM:
    # cryptography is imported by the first use of a key: an unencrypted repository's
    # commands do not pay for it at start-up
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(key)


def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


def new_master_key() -> bytes:
    return secrets.token_bytes(MASTER_KEY_BYTES)


class Cipher:
    """Seals and opens with one repository's master key."""

    def __init__(self, master_key: bytes, repo_id: str) -> None:
        if len(master_key) != MASTER_KEY_BYTES:
            raise ValueError("the master key must be 32 bytes")
        self._aead = _aesgcm(master_key)
        self._invalid_tag = _invalid_tag()
        self._master = master_key
        self.repo_id = repo_id

    @property
    def master_key(self) -> bytes:
        return self._master

    def seal(self, data: bytes, aad: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE)
        return nonce + self._aead.encrypt(nonce, data, aad)

    def open(self, blob: bytes | memoryview, aad: bytes, what: str) -> bytes:
        if len(blob) < OVERHEAD:
            raise IntegrityError(f"{what}: too short to be sealed ({len(blob)} bytes)")
        view = memoryview(blob)  # slicing bytes would copy every frame once more
        try:
            return self._aead.decrypt(view[:NONCE], view[NONCE:], aad)
        except self._invalid_tag:
            raise IntegrityError(
                f"{what}: authentication failed (altered, moved, or not this repository's)"
            ) from None

    def open_into(self, blob: bytes | memoryview, aad: bytes, what: str, scratch: bytearray) -> memoryview:
        """:meth:`open` into ``scratch`` (long enough): the plaintext as a view of it, valid
        until ``scratch`` is used again. Saves allocating (and faulting in) a buffer per frame."""
        if len(blob) < OVERHEAD:
            raise IntegrityError(f"{what}: too short to be sealed ({len(blob)} bytes)")
        view = memoryview(blob)
        out = memoryview(scratch)[: len(blob) - OVERHEAD]
        try:
            self._aead.decrypt_into(view[:NONCE], view[NONCE:], aad, out)
            return out
        except self._invalid_tag:
            raise IntegrityError(
                f"{what}: authentication failed (altered, moved, or not this repository's)"
            ) from None

    # What each object is bound to (module docstring).

    def _frame_aad(self, table: bool, codec: str, size: int, hash_: str) -> bytes:
        return _aad("table" if table else "frame", self.repo_id, codec, str(size), hash_)

    def seal_frame(
        self, data: bytes, codec: str, size: int, hash_: str, *, table: bool = False
    ) -> bytes | bytearray:
        """:meth:`seal` for a frame, encrypted straight into its stored form (no copies:
        a create seals every frame it stores)."""
        nonce = secrets.token_bytes(NONCE)
        out = bytearray(OVERHEAD + len(data))
        out[:NONCE] = nonce
        aad = self._frame_aad(table, codec, size, hash_)
        self._aead.encrypt_into(nonce, data, aad, memoryview(out)[NONCE:])
        return out

    def open_frame(self, blob: bytes | memoryview, frame: Frame, what: str, *, table: bool = False,
                   scratch: bytearray | None = None) -> bytes | memoryview:
        aad = self._frame_aad(table, frame.codec, frame.size, frame.hash)
        if scratch is not None and len(scratch) >= len(blob):
            return self.open_into(blob, aad, what, scratch)
        return self.open(blob, aad, what)

    def seal_root(self, data: bytes, snapshot_id: str) -> bytes:
        return self.seal(data, _aad("root", self.repo_id, snapshot_id))

    def open_root(self, blob: bytes, snapshot_id: str) -> bytes:
        return self.open(blob, _aad("root", self.repo_id, snapshot_id), f"manifest {snapshot_id}")

    def seal_settings(self, data: bytes) -> bytes:
        return self.seal(data, _aad("config", self.repo_id))

    def open_settings(self, blob: bytes) -> bytes:
        return self.open(blob, _aad("config", self.repo_id), "repository config: its sealed settings")

    def seal_key_info(self, key_id: str, info: dict[str, Any]) -> bytes:
        return self.seal(_dumps(info), _aad("key-info", self.repo_id, key_id))

    def open_key_info(self, key_id: str, blob: bytes) -> dict[str, Any]:
        raw = self.open(blob, _aad("key-info", self.repo_id, key_id), f"key {key_id}: its info")
        return _load_json(raw, f"key {key_id}: its info")


# ---------------------------------------------------------------- passwords and key files


@dataclass(frozen=True)
class ScryptParams:
    log_n: int
    r: int
    p: int
    salt: bytes

    @classmethod
    def new(cls) -> ScryptParams:
        return cls(_env_log_n() or DEFAULT_LOG_N, DEFAULT_R, DEFAULT_P, secrets.token_bytes(SALT_BYTES))

    def describe(self) -> str:
        return f"scrypt N=2^{self.log_n} r={self.r} p={self.p}"

    @property
    def memory(self) -> int:
        return 128 * self.r << self.log_n

    @property
    def work(self) -> int:
        return self.r * self.p << self.log_n

    def too_costly(self) -> bool:
        """Costlier to derive than any key this command would make (see READ_LOG_N)."""
        bound = costliest()
        return self.memory > bound.memory or self.work > bound.work

    def derive(self, password: bytes) -> bytes:
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

        kdf = Scrypt(salt=self.salt, length=MASTER_KEY_BYTES, n=1 << self.log_n, r=self.r, p=self.p)
        return kdf.derive(password)


def costliest() -> ScryptParams:
    """The costliest parameters a reader derives with (READ_LOG_N)."""
    return ScryptParams(max(READ_LOG_N, _env_log_n() or 0), DEFAULT_R, DEFAULT_P, b"")


def cost_limit() -> str:
    """What too_costly allows, and how to allow more, for messages."""
    bound, top = costliest(), _LOG_N_RANGE[1]
    more = f"; {LOG_N_ENV}={top} allows N=2^{top}" if bound.log_n < top else ""
    return f"at most the memory and work of {bound.describe()}{more}"


@dataclass(frozen=True)
class KeyFile:
    """The content of ``keys/<id>``: how to derive the wrapping key from a password, the master
    key sealed with it (bound to the key id), and the key's info (created, host) sealed with
    the master key."""

    params: ScryptParams
    wrapped: bytes
    info: bytes

    def to_json(self) -> bytes:
        p = self.params
        return _dumps({
            "format_version": KEY_FILE_VERSION,
            "kdf": {"name": KDF, "log_n": p.log_n, "r": p.r, "p": p.p, "salt": _b64(p.salt)},
            "key": _b64(self.wrapped),
            "info": _b64(self.info),
        })


def _env_log_n() -> int | None:
    wanted = os.environ.get(LOG_N_ENV)
    if not wanted:
        return None
    if not wanted.isdigit() or not _LOG_N_RANGE[0] <= int(wanted) <= _LOG_N_RANGE[1]:
        raise UsageError(f"{LOG_N_ENV} must be an integer in {_LOG_N_RANGE[0]}..{_LOG_N_RANGE[1]}")
    return int(wanted)


def _int(d: dict[str, Any], name: str, low: int, high: int, what: str) -> int:
    v = d.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
        raise IntegrityError(f"{what}: kdf field {name} is missing or out of range")
    return v


def parse_key_file(raw: bytes, key_id: str) -> KeyFile:
    what = f"key {key_id}"
    data = _load_json(raw, what)
    if data.get("format_version") != KEY_FILE_VERSION:
        raise FormatVersionError(f"{what} has an unknown format_version (upgrade chroma-snapshot)")
    kdf = data.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("name") != KDF:
        raise IntegrityError(f"{what}: unknown key derivation (expected {KDF})")
    # Only the form is checked here: what a derivation may cost is too_costly's (the reader
    # orders keys by cost and names the ones it refuses for it).
    params = ScryptParams(
        log_n=_int(kdf, "log_n", _LOG_N_RANGE[0], 63, what),
        r=_int(kdf, "r", 1, 1 << 20, what),
        p=_int(kdf, "p", 1, 1 << 20, what),
        salt=_unb64(kdf.get("salt"), f"{what}: salt"),
    )
    if not 16 <= len(params.salt) <= 64:
        raise IntegrityError(f"{what}: kdf parameters out of range")
    return KeyFile(params, _unb64(data.get("key"), f"{what}: key"), _unb64(data.get("info"), f"{what}: info"))


def wrap_key(cipher: Cipher, key_id: str, password: bytes, info: dict[str, Any]) -> KeyFile:
    """A new key file holding ``cipher``'s master key, opened by ``password``."""
    params = ScryptParams.new()
    wrapping = Cipher(params.derive(password), cipher.repo_id)
    wrapped = wrapping.seal(cipher.master_key, _aad("key", key_id))
    return KeyFile(params, wrapped, cipher.seal_key_info(key_id, info))


def unwrap_key(kf: KeyFile, key_id: str, password: bytes) -> bytes | None:
    """The master key ``kf`` holds, or None when ``password`` does not open it (wrong password,
    or the key file was altered or renamed: the two cannot be told apart)."""
    blob = kf.wrapped
    if len(blob) != OVERHEAD + MASTER_KEY_BYTES or kf.params.too_costly():  # callers say which
        return None
    aead = _aesgcm(kf.params.derive(password))
    try:
        return aead.decrypt(blob[:NONCE], blob[NONCE:], _aad("key", key_id))
    except _invalid_tag():
        return None


# ---------------------------------------------------------------- the config of an encrypted repository


@dataclass(frozen=True)
class Envelope:
    """config.json of an encrypted repository: what a reader needs before it has the key (the
    repository id, the algorithms) and the settings, sealed."""

    id: str
    settings: bytes

    def to_json(self) -> bytes:
        return _dumps({
            "format_version": CONFIG_VERSION_ENCRYPTED,
            "id": self.id,
            "encryption": {"algorithm": ALGORITHM, "kdf": KDF},
            "settings": _b64(self.settings),
        })


def parse_envelope(raw: bytes, what: str, plain_versions: tuple[int, ...]) -> Envelope | None:
    """The envelope of an encrypted repository's config, or None for a plaintext config (whose
    format_version is one of ``plain_versions``; the caller parses it)."""
    try:
        data = _load_json(raw, what)
    except IntegrityError:
        return None  # parse_config says what is wrong with it
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        return None
    if version in plain_versions:
        if "encryption" in data:
            raise IntegrityError(f"{what}: an encryption block in a format-{version} config")
        return None
    if version != CONFIG_VERSION_ENCRYPTED:
        known = ", ".join(map(str, (*plain_versions, CONFIG_VERSION_ENCRYPTED)))
        raise FormatVersionError(
            f"{what} has format_version {version!r}; this chroma-snapshot reads version {known} "
            "(upgrade chroma-snapshot)"
        )
    enc = data.get("encryption")
    if not isinstance(enc, dict) or enc.get("algorithm") != ALGORITHM or enc.get("kdf") != KDF:
        raise FormatVersionError(
            f"{what}: unknown encryption {enc!r}; this chroma-snapshot knows {ALGORITHM} with {KDF} "
            "(upgrade chroma-snapshot)"
        )
    repo_id = data.get("id")
    if not isinstance(repo_id, str) or not layout.is_object_id(repo_id):
        raise IntegrityError(f"{what}: repository id is not 32 hex digits")
    return Envelope(repo_id, _unb64(data.get("settings"), f"{what}: settings"))
