"""Edges of an encrypted repository that a hostile bucket writer or an unlucky user reaches:
key objects of absurd KDF cost, --encrypt against an existing repository, tags and messages
that would break a line, an init killed between its key and its config, and password sources
that never end (a hanging command, a FIFO nobody writes to)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import CliResult
from test_encryption import ENV, PASSWORD, one_line_error, pw_file
from test_encryption import stored_files as files

from snapshot import Repository
from snapshot.cli import passwords
from snapshot.format import crypto
from snapshot.repo.keys import KeySource
from snapshot.util import pausepoints

Cli = Callable[..., CliResult]
@pytest.fixture(autouse=True)
def _cheap_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in test_encryption.py (N = 2**10 for new keys), and no password timeout set."""
    for name in (*ENV, passwords.TIMEOUT_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(crypto.LOG_N_ENV, "10")


@pytest.fixture
def enc_repo(tmp_path: Path) -> tuple[Path, str]:
    """An empty encrypted repository and the id of its one key."""
    repo = Repository.init(tmp_path / "repo", encrypt=True, key_source=KeySource.of(PASSWORD))
    assert repo.key_id is not None
    return tmp_path / "repo", repo.key_id


# --- key objects of absurd cost ----------------------------------------------------------------


def _forge(repo: Path, from_id: str, new_id: str, log_n: int, r: int, p: int) -> None:
    doc = json.loads((repo / "keys" / from_id).read_bytes())
    doc["kdf"].update(log_n=log_n, r=r, p=p)
    (repo / "keys" / new_id).write_text(json.dumps(doc))


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """Every scrypt derivation's (log_n, r, p); one costlier than N=2^12 is not run (a wrong
    key comes back), so that a test of the bound never spends the cost it guards against."""
    seen: list[tuple[int, int, int]] = []
    real = crypto.ScryptParams.derive

    def derive(self: crypto.ScryptParams, password: bytes) -> bytes:
        seen.append((self.log_n, self.r, self.p))
        return real(self, password) if self.log_n <= 12 else bytes(32)

    monkeypatch.setattr(crypto.ScryptParams, "derive", derive)
    return seen


HUGE = (20, 8, 16)  # 1 GiB like N=2^20 r=8 p=1, 16 times its work: ~100 s here
DEAR = (20, 8, 1)  # the costliest key a writer makes by default: within the bound, tried last


def test_a_key_of_absurd_cost_is_never_derived(
    enc_repo: tuple[Path, str], derivations: list[tuple[int, int, int]], cli: Cli, tmp_path: Path
) -> None:
    repo, good = enc_repo
    huge, dear = "0" * 32, "1" * 32  # both sort before the good key
    _forge(repo, good, huge, *HUGE)
    _forge(repo, good, dear, *DEAR)

    opened = Repository.open(repo, key_source=KeySource.of(PASSWORD))
    assert opened.key_id == good
    assert derivations == [(10, 8, 1)]  # the cheapest key first, and it opens
    assert cli("--repo", repo, "list", "--password-file", pw_file(tmp_path)).code == 0

    derivations.clear()
    line = one_line_error(cli("--repo", repo, "list", "--password-file", pw_file(tmp_path, "wrong")), 16)
    assert HUGE not in derivations and derivations == [(10, 8, 1), DEAR]
    tried, refused = line.split("; refused for their cost, not tried: ")
    assert good[:8] in tried and dear[:8] in tried and huge[:8] not in tried
    assert refused.startswith(f"{huge[:8]} (scrypt N=2^20 r=8 p=16)") and crypto.LOG_N_ENV in refused

    listed = cli("--repo", repo, "key", "list", "--password-file", pw_file(tmp_path))
    assert listed.code == 0 and "UNREADABLE" not in listed.stdout
    (row,) = [ln for ln in listed.stdout.splitlines() if huge in ln]
    assert "refused for its cost" in row


def test_only_keys_of_absurd_cost(enc_repo: tuple[Path, str], derivations: list[tuple[int, int, int]],
                                  cli: Cli, tmp_path: Path) -> None:
    repo, good = enc_repo
    _forge(repo, good, good, *HUGE)
    line = one_line_error(cli("--repo", repo, "list", "--password-file", pw_file(tmp_path)), 16)
    assert derivations == [] and f"refused for their cost, not tried: {good[:8]}" in line
    assert "could be tried" in line and "wrong password" not in line


@pytest.mark.parametrize("log_n", range(10, 23))
def test_every_key_a_writer_makes_is_read(log_n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """CHROMA_SNAPSHOT_SCRYPT_LOG_N=21 or 22 made keys that no reader would derive (1 GiB was
    the reader's bound): the repository they opened was lost. Now the writer's setting also
    raises the reader's bound, and up to N=2^20 no setting is needed to read."""
    monkeypatch.setenv(crypto.LOG_N_ENV, str(log_n))
    made = crypto.KeyFile(crypto.ScryptParams.new(), bytes(crypto.OVERHEAD + 32), b"info")
    read = crypto.parse_key_file(made.to_json(), "b" * 32)
    assert read.params.log_n == log_n and not read.params.too_costly()
    monkeypatch.delenv(crypto.LOG_N_ENV)
    assert read.params.too_costly() == (log_n > crypto.READ_LOG_N)


# --- --encrypt against an existing repository ----------------------------------------------------


def test_encrypt_against_an_existing_repository(cli: Cli, chroma_dir: Path, tmp_path: Path) -> None:
    """--encrypt asks for what an encrypted repository already is: accepted, nothing changes;
    against an unencrypted one it is refused and nothing is written."""
    pw = pw_file(tmp_path)
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    assert cli("--repo", enc, "init", "--encrypt", "--password-file", pw).code == 0
    config, keys = (enc / "config.json").read_bytes(), sorted(os.listdir(enc / "keys"))
    res = cli("--repo", enc, "create", chroma_dir, "--encrypt", "--password-file", pw, "--json")
    assert res.code == 0, res.stderr
    assert (enc / "config.json").read_bytes() == config and sorted(os.listdir(enc / "keys")) == keys
    again = cli("--repo", enc, "init", "--encrypt", "--password-file", pw)
    assert "already exists" in one_line_error(again, 2)

    assert cli("--repo", plain, "create", chroma_dir).code == 0
    before = files(plain)
    line = one_line_error(cli("--repo", plain, "create", chroma_dir, "--encrypt", "--password-file", pw), 2)
    assert "not encrypted" in line
    line = one_line_error(cli("--repo", plain, "create", chroma_dir, "--encrypt"), 2)
    assert "not encrypted" in line and "--encrypt" in line
    assert files(plain) == before


# --- tags and messages -------------------------------------------------------------------------


@pytest.mark.parametrize(("option", "value"), [
    ("--tag", "nightly\nforged"), ("--tag", "a\tb"), ("--tag", "red\x1b[31m"), ("-m", "one\ntwo"),
    ("--message", "cr\rhere"), ("-m", "nul\x00"), ("-m", "line\u2028separator"), ("--message", "del\x7f"),
])
def test_control_characters_in_tags_and_messages(option: str, value: str, cli: Cli, chroma_dir: Path,
                                                 repo_path: Path) -> None:
    line = one_line_error(cli("--repo", repo_path, "create", chroma_dir, option, value), 2)
    named = "--tag" if option == "--tag" else "--message"
    assert named in line and "control character" in line
    assert not repo_path.exists()  # refused before the repository is touched


def test_printable_tags_and_messages_are_kept(cli: Cli, chroma_dir: Path, repo_path: Path) -> None:
    res = cli("--repo", repo_path, "create", chroma_dir, "--tag", "été", "-m", "après le chapitre 5 — ok",
              "--json")
    assert res.code == 0, res.stderr
    shown = cli("--repo", repo_path, "show", "latest", "--json").json()
    assert shown["tags"] == ["été"] and shown["message"] == "après le chapitre 5 — ok"


# --- an init killed between its key and its config -----------------------------------------------


def _child(
    repo: Path, env: dict[str, str], *args: str | Path, kill_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in env.items() if k != pausepoints.KILL_ENV}
    if kill_at:
        env[pausepoints.KILL_ENV] = kill_at
    return subprocess.run([sys.executable, "-m", "snapshot", "--repo", str(repo), *map(str, args)], env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=180)


def test_init_killed_after_its_key_leaves_no_unreadable_key(cli: Cli, tmp_path: Path) -> None:
    repo, pw = tmp_path / "repo", pw_file(tmp_path)
    env = dict(os.environ, CHROMA_SNAPSHOT_PASSWORD_FILE=str(pw))
    killed = _child(repo, env, "init", "--encrypt", kill_at="repository.key-written")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    (stray,) = os.listdir(repo / "keys")
    assert os.listdir(repo) == ["keys"]

    again = _child(repo, env, "init", "--encrypt", "--json")
    assert again.returncode == 0, again.stderr
    assert os.listdir(repo / "keys") == [json.loads(again.stdout)["key"]] != [stray]  # swept
    listed = cli("--repo", repo, "key", "list", "--password-file", pw)
    assert listed.code == 0 and "UNREADABLE" not in listed.stdout and stray not in listed.stdout


def test_init_killed_twice_marks_the_orphan(cli: Cli, tmp_path: Path) -> None:
    """Killed after its key, then the next init killed after its config (before it swept):
    the stray key stays, `key list` says what it is, the repository works, `key remove` clears it."""
    repo, pw = tmp_path / "repo", pw_file(tmp_path)
    env = dict(os.environ, CHROMA_SNAPSHOT_PASSWORD_FILE=str(pw))
    for point in ("repository.key-written", "repository.config-written"):
        assert _child(repo, env, "init", "--encrypt", kill_at=point).returncode == -signal.SIGKILL
        if point == "repository.key-written":
            (stray,) = os.listdir(repo / "keys")
    assert (repo / "config.json").exists() and len(os.listdir(repo / "keys")) == 2

    listed = cli("--repo", repo, "key", "list", "--password-file", pw)
    assert listed.code == 0 and "UNREADABLE" not in listed.stdout
    (row,) = [ln for ln in listed.stdout.splitlines() if stray in ln]
    assert "ORPHANED" in row and "interrupted init" in row
    keys = cli("--repo", repo, "key", "list", "--json", "--password-file", pw).json()
    assert [k["id"] for k in keys if k["orphaned"]] == [stray]
    assert cli("--repo", repo, "key", "remove", stray[:8], "--password-file", pw).code == 0
    assert cli("--repo", repo, "list", "--password-file", pw).code == 0


def test_init_that_lost_a_race_and_died(cli: Cli, tmp_path: Path) -> None:
    """Another init wrote its config between this one's key and its config, and this one died
    before deleting its key: the winner swept that key once its own config was written."""
    repo, pw = tmp_path / "repo", pw_file(tmp_path)
    started: list[bool] = []
    winner: list[Repository] = []

    def race() -> None:
        if not started:
            started.append(True)
            winner.append(Repository.init(repo, encrypt=True, key_source=KeySource.of(PASSWORD)))

    def die() -> None:
        raise KeyboardInterrupt

    with pausepoints.on("repository.key-written", race), pausepoints.on("repository.init-lost", die), \
            pytest.raises(KeyboardInterrupt):
        Repository.init(repo, encrypt=True, key_source=KeySource.of(PASSWORD))
    assert os.listdir(repo / "keys") == [winner[0].key_id]
    assert cli("--repo", repo, "list", "--password-file", pw).code == 0


def test_a_key_of_another_repository_is_marked_orphaned(enc_repo: tuple[Path, str], cli: Cli,
                                                        tmp_path: Path) -> None:
    """What a losing init killed before deleting its key leaves when the winner swept first:
    a key that opens with the password but wraps another master key."""
    repo, good = enc_repo
    other = Repository.init(tmp_path / "other", encrypt=True, key_source=KeySource.of(PASSWORD))
    assert other.key_id is not None
    (repo / "keys" / other.key_id).write_bytes((tmp_path / "other" / "keys" / other.key_id).read_bytes())
    pw = pw_file(tmp_path)
    assert cli("--repo", repo, "list", "--password-file", pw).code == 0
    listed = cli("--repo", repo, "key", "list", "--password-file", pw)
    assert listed.code == 0 and "UNREADABLE" not in listed.stdout
    (row,) = [ln for ln in listed.stdout.splitlines() if other.key_id in ln]
    assert "ORPHANED" in row
    keys = cli("--repo", repo, "key", "list", "--json", "--password-file", pw).json()
    assert {k["id"]: k["orphaned"] for k in keys} == {good: False, other.key_id: True}


# --- password sources that never end ---------------------------------------------------------------


def test_a_hanging_password_command_times_out(enc_repo: tuple[Path, str], cli: Cli,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    repo, _ = enc_repo
    monkeypatch.setenv(passwords.TIMEOUT_ENV, "0.5")
    slow = f"import time; time.sleep(30); print({PASSWORD!r})"
    line = one_line_error(cli("--repo", repo, "list", "--password-command",
                              f"{shlex.quote(sys.executable)} -c {shlex.quote(slow)}"), 2)
    assert "--password-command did not end within 0.5 s" in line and passwords.TIMEOUT_ENV in line
    quick = f"print({PASSWORD!r})"
    assert cli("--repo", repo, "list", "--password-command",
               f"{shlex.quote(sys.executable)} -c {shlex.quote(quick)}").code == 0


def test_a_fifo_nobody_writes_to_times_out(enc_repo: tuple[Path, str], tmp_path: Path) -> None:
    repo, _ = enc_repo
    fifo = tmp_path / "pw-fifo"
    os.mkfifo(fifo)
    env = {k: v for k, v in os.environ.items() if k not in (*ENV, passwords.TIMEOUT_ENV)}
    env[passwords.TIMEOUT_ENV] = "0.5"
    # a child process: opening the FIFO used to block forever
    res = subprocess.run([sys.executable, "-m", "snapshot", "--repo", str(repo), "list", "--password-file",
                          str(fifo)], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                         timeout=60)
    one_line_error(CliResult(res.returncode, res.stdout, res.stderr), 2)
    assert str(fifo) in res.stderr and "within 0.5 s" in res.stderr and passwords.TIMEOUT_ENV in res.stderr


def test_a_fifo_written_to_gives_the_password(enc_repo: tuple[Path, str], cli: Cli, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    repo, _ = enc_repo
    fifo = tmp_path / "pw-fifo"
    os.mkfifo(fifo)
    monkeypatch.setenv(passwords.TIMEOUT_ENV, "30")

    def write() -> None:
        with open(fifo, "w") as fh:  # blocks until the command opens the FIFO
            fh.write(PASSWORD + "\n")

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    res = cli("--repo", repo, "list", "--password-file", fifo, "--json")
    writer.join(5)
    assert res.code == 0 and res.json() == [], res.stderr


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_a_bad_password_timeout_is_a_usage_error(value: str, enc_repo: tuple[Path, str], cli: Cli,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    repo, _ = enc_repo
    monkeypatch.setenv(passwords.TIMEOUT_ENV, value)
    line = one_line_error(cli("--repo", repo, "list", "--password-command", "echo x"), 2)
    assert passwords.TIMEOUT_ENV in line
