"""Which restore targets may be written or replaced: empty and missing ones always, a Chroma
persist dir with --force (nothing in it but Chroma's files, in segment folders that the snapshot
or the target's chroma.sqlite3 names), never a symlink, a file, /, home, the working directory
or a protected path (the repository, the source, the base cache)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from chroma_helpers import stand_in_persist_dir

from snapshot.chroma.persist_dir import check_restore_target
from snapshot.errors import TargetError, UsageError

SEGMENT = "3f0c1a2b-9d4e-4c5f-8a6b-7c8d9e0f1a2b"
OTHER = "4c5f8a6b-0000-4000-8000-000000000000"
CHROMA_FILES = ("header.bin", "data_level0.bin", "length.bin", "link_lists.bin", "index_metadata.pickle")


def chroma_dir(path: Path, *extra: str) -> Path:
    stand_in_persist_dir(path, SEGMENT)
    for name in extra:
        (path / name).write_bytes(b"")
    return path


def refused(target: Path, match: str, **kw: object) -> TargetError:
    kw.setdefault("force", True)
    with pytest.raises(TargetError, match=match) as info:
        check_restore_target(target, **kw)  # type: ignore[arg-type]
    assert info.value.exit_code == 7
    assert "\n" not in str(info.value) and str(target) in str(info.value)
    return info.value


@pytest.mark.parametrize("force", [False, True])
def test_missing_or_empty_target_is_fine(tmp_path: Path, force: bool) -> None:
    check_restore_target(tmp_path / "new" / "db", force=force)
    (tmp_path / "empty").mkdir()
    check_restore_target(tmp_path / "empty", force=force)


def test_empty_string_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="empty restore target") as info:
        check_restore_target(Path(""), force=True, raw="")
    assert info.value.exit_code == 2


def test_dot_is_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TargetError, match="is the current directory"):
        check_restore_target(Path(""), force=True)


def test_symlink_is_refused(tmp_path: Path) -> None:
    real = chroma_dir(tmp_path / "real")
    (tmp_path / "link").symlink_to(real)
    refused(tmp_path / "link", "is a symlink")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    refused(tmp_path / "dangling", "is a symlink", force=False)


def test_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    refused(tmp_path / "f", "exists and is not a directory")


def test_non_empty_needs_force(tmp_path: Path) -> None:
    target = chroma_dir(tmp_path / "db")
    refused(target, r"is not empty \(use --force to replace it\)", force=False)
    check_restore_target(target, force=True)


def test_force_accepts_a_chroma_persist_dir(tmp_path: Path) -> None:
    target = chroma_dir(
        tmp_path / "db", "chroma.sqlite3-wal", "chroma.sqlite3-shm", "chroma.sqlite3-journal", "notes.txt"
    )
    (target / "config").mkdir()
    check_restore_target(target, force=True, allowed_names={"notes.txt", "config"})


def test_force_needs_chroma_sqlite3_as_a_file(tmp_path: Path) -> None:
    target = tmp_path / "photos"
    target.mkdir()
    (target / "holiday.jpg").write_bytes(b"jpeg")
    refused(target, "not a Chroma persist dir")
    (target / "holiday.jpg").unlink()
    (target / "chroma.sqlite3").mkdir()
    refused(target, "not a Chroma persist dir")


@pytest.mark.parametrize(
    "make",
    [
        lambda t: (t / "zz-report.pdf").write_bytes(b""),
        lambda t: (t / SEGMENT.upper()).mkdir(),  # Chroma's names are lowercase
        lambda t: (t / "4c5f8a6b-0000-4000-8000-000000000000").write_bytes(b""),  # a file
        lambda t: (t / "4c5f8a6b-0000-4000-8000-000000000000").symlink_to(t / SEGMENT),
        lambda t: (t / ".git").mkdir(),
    ],
    ids=["file", "uppercase-uuid", "uuid-file", "uuid-symlink", "dotdir"],
)
def test_force_refuses_foreign_entries(tmp_path: Path, make: object) -> None:
    target = chroma_dir(tmp_path / "db")
    make(target)  # type: ignore[operator]
    (name,) = set(os.listdir(target)) - {"chroma.sqlite3", SEGMENT}
    err = refused(target, "not part of a Chroma persist dir")
    assert repr(name) in str(err)


def test_force_accepts_chroma_files_in_segment_folders(tmp_path: Path) -> None:
    target = stand_in_persist_dir(tmp_path / "db", SEGMENT, OTHER)  # both named by its database
    for name in CHROMA_FILES:
        (target / SEGMENT / name).write_bytes(b"x")
    (target / OTHER / "length.bin").symlink_to(target / SEGMENT / "length.bin")  # replaced, not followed
    check_restore_target(target, force=True)
    (target / SEGMENT / "extra.bin").write_bytes(b"x")  # not Chroma's, but the snapshot's
    check_restore_target(target, force=True, files={f"{SEGMENT}/extra.bin", "chroma.sqlite3"})


@pytest.mark.parametrize(
    "make",
    [
        lambda seg: (seg / "notes.txt").write_text("mine"),
        lambda seg: (seg / "drafts").mkdir(),
        lambda seg: (seg / "length.bin").mkdir(),  # Chroma's name, but a folder
        lambda seg: (seg / "notes.txt").symlink_to(seg / "header.bin"),
    ],
    ids=["file", "folder", "folder-with-chromas-name", "symlink"],
)
def test_force_refuses_foreign_entries_in_segment_folders(tmp_path: Path, make: object) -> None:
    target = chroma_dir(tmp_path / "db")
    make(target / SEGMENT)  # type: ignore[operator]
    (name,) = set(os.listdir(target / SEGMENT)) - {"header.bin"}
    err = refused(target, "not part of a Chroma persist dir")
    assert repr(f"{SEGMENT}/{name}") in str(err)
    refused(target, repr(f"{SEGMENT}/{name}"), files={f"{SEGMENT}/header.bin"})  # in the snapshot too


def test_force_refuses_a_segment_folder_nobody_names_unless_it_holds_only_chromas_files(
    tmp_path: Path,
) -> None:
    target = chroma_dir(tmp_path / "db")
    (target / OTHER).mkdir()  # neither a segment of the target's database nor in the snapshot
    (target / OTHER / "header.bin").write_bytes(b"x")
    (target / OTHER / "notes.txt").write_bytes(b"mine")
    err = refused(target, f"'{OTHER}', a folder that neither the snapshot nor the target's chroma.sqlite3 "
                          "names as a segment")
    assert SEGMENT not in str(err)
    (target / OTHER / "notes.txt").unlink()
    # Chroma's files alone: what delete_collection leaves behind; dropped, and said so
    assert check_restore_target(target, force=True) == (OTHER,)
    (target / OTHER / "header.bin").unlink()
    refused(target, f"'{OTHER}'")  # an empty folder of that name is nobody's leftover
    (target / OTHER / "header.bin").write_bytes(b"x")
    assert check_restore_target(target, force=True, files={f"{OTHER}/header.bin"}) == ()  # in the snapshot


def test_force_refuses_segment_folders_when_the_database_is_unreadable(tmp_path: Path) -> None:
    target = chroma_dir(tmp_path / "db")
    (target / "chroma.sqlite3").write_bytes(b"not a database, and longer than a header " * 4)
    refused(target, f"'{SEGMENT}', a folder not in the snapshot, and the target's chroma.sqlite3 cannot be read")
    check_restore_target(target, force=True, files={f"{SEGMENT}/header.bin"})


def test_first_foreign_entry_is_named(tmp_path: Path) -> None:
    target = chroma_dir(tmp_path / "db", "b.txt", "a.txt")
    err = refused(target, "'a.txt'")
    assert "b.txt" not in str(err)
    refused(target, "'b.txt'", allowed_names=["a.txt"])


def test_root_is_always_refused() -> None:
    refused(Path("/"), "filesystem root", force=False)


def test_home_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    refused(home, "is your home directory", force=False)
    refused(tmp_path, "contains your home directory", force=False)
    check_restore_target(home / "db", force=False)


def test_working_directory_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    refused(work, "is the current directory", force=False)
    refused(tmp_path, "contains the current directory", force=False)
    check_restore_target(work / "db", force=False)


def test_protected_paths(tmp_path: Path) -> None:
    repo = tmp_path / "data" / "repo"
    repo.mkdir(parents=True)
    protected = [(repo, "the repository"), (tmp_path / "src" / "db", "the snapshot's source")]
    refused(repo, "it is the repository", protected=protected)
    refused(repo / "objects", "lies inside the repository", protected=protected)
    refused(tmp_path / "data", "contains the repository", protected=protected)
    refused(tmp_path / "src", "contains the snapshot's source", protected=protected)
    check_restore_target(tmp_path / "data" / "repo2", force=True, protected=protected)  # a prefix only


def test_protected_paths_are_compared_resolved(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (tmp_path / "alias").symlink_to(repo)
    refused(repo / "db", "lies inside the repository", protected=[(tmp_path / "alias", "the repository")])
    refused(tmp_path / "alias" / "db", "lies inside the base cache", protected=[(repo, "the base cache")])


def test_mount_point_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "mnt"
    target.mkdir()
    monkeypatch.setattr(os.path, "ismount", lambda p: os.fspath(p) == str(target))
    refused(target, "is a mount point", force=False)


def test_unreadable_target_is_a_target_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = chroma_dir(tmp_path / "db")
    real_listdir = os.listdir

    def listdir(p: str | os.PathLike[str]) -> list[str]:
        if os.fspath(p) == str(target):
            raise PermissionError(13, "Permission denied", str(p))
        return real_listdir(p)

    monkeypatch.setattr(os, "listdir", listdir)  # as without read permission (tests may run as root)
    refused(target, "cannot read restore target .*: Permission denied")


def test_checking_writes_nothing(tmp_path: Path) -> None:
    target = chroma_dir(tmp_path / "db", "chroma.sqlite3-wal")
    before = sorted((p, p.lstat().st_mtime_ns) for p in tmp_path.rglob("*"))
    check_restore_target(target, force=True)
    check_restore_target(tmp_path / "missing", force=True)
    assert sorted((p, p.lstat().st_mtime_ns) for p in tmp_path.rglob("*")) == before
    assert not (tmp_path / "missing").exists()
