"""The installed package is the tested package: console script, python -m, the cli.py shim,
help texts with examples, and the runnable examples."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

#: Builds and installs a wheel, or runs the product in child processes (run before a commit, and in CI).
slow = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build a wheel of the checkout and install it (without deps, which the venv has) apart."""
    base = tmp_path_factory.mktemp("install")
    wheels, site = base / "wheels", base / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True, capture_output=True,
    )
    wheel = next(wheels.glob("chroma_snapshot-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True, capture_output=True,
    )
    return {"wheel": wheel, "site": site, "script": site / "bin" / "chroma-snapshot"}


def _env(site: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(site), PYTHONSAFEPATH="1")


@slow
def test_wheel_ships_library_not_shim(installed: dict[str, Path]) -> None:
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    assert "snapshot/py.typed" in names and "snapshot/storage/s3/store.py" in names
    assert not any(n == "cli.py" or n.startswith("tests/") for n in names)
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "chroma-snapshot = snapshot.cli:main" in zipfile.ZipFile(installed["wheel"]).read(entry).decode()


@slow
def test_console_script_round_trip_outside_repo(installed, chroma_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _env(installed["site"])
    env["CHROMA_SNAPSHOT_REPO"] = str(tmp_path / "repo")
    where = subprocess.run([sys.executable, "-c", "import snapshot; print(snapshot.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(installed["site"]))
    script = [sys.executable, str(installed["script"])]
    made = subprocess.run([*script, "create", str(chroma_dir), "--tag", "nightly"], cwd=work, env=env,
                          capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert "snapshot " in made.stdout and "saved" in made.stdout
    listed = subprocess.run([*script, "list"], cwd=work, env=env, capture_output=True, text=True)
    assert "nightly" in listed.stdout and "docs=3000" in listed.stdout
    restored = subprocess.run([*script, "restore", "latest", str(tmp_path / "out"), "--chroma-check"],
                              cwd=work, env=env, capture_output=True, text=True)
    assert restored.returncode == 0, restored.stderr
    assert "checked: hashes, segment-files, hnsw-header, hnsw-sizes, ids-match, chromadb" in restored.stdout
    assert "chromadb opened it (1 batch(es)): docs=3000, notes=1000" in restored.stdout


@slow
@pytest.mark.parametrize("how", ["module", "shim"])
def test_python_m_and_shim(how: str, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "snapshot"] if how == "module" else [sys.executable, str(ROOT / "cli.py")]
    out = subprocess.run([*cmd, "--repo", str(tmp_path / "none"), "list"], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 3 and out.stderr.startswith("chroma-snapshot: error: no repository at")
    assert "Traceback" not in out.stderr
    v = subprocess.run([*cmd, "--version"], capture_output=True, text=True, cwd=ROOT)
    assert v.returncode == 0 and "chroma-snapshot" in v.stdout


def test_every_command_has_help_with_example(cli) -> None:
    from snapshot.cli import COMMANDS

    assert {"create", "list", "show", "restore"} <= set(COMMANDS)
    for name in COMMANDS:
        res = cli(name, "--help")
        assert res.code == 0, name
        assert "Example:" in res.stdout and "chroma-snapshot" in res.stdout.split("Example:", 1)[1], name
    top = cli("--help")
    assert top.code == 0 and "Example:" in top.stdout


def test_usage_errors_exit_2(cli) -> None:
    res = cli("restore")
    assert res.code == 2 and "Missing argument" in res.stderr
    res = cli("create", "--codec", "lz4", "x")
    assert res.code == 2
    res = cli("nonsense")
    assert res.code == 2


@slow
def test_quickstart_example_runs(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), str(tmp_path / "w")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1].startswith("OK: 2 snapshots")


def test_readme_commands_and_ci_agree() -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = readme.split("```bash\n")
    first, second = blocks[1].split("```")[0].strip(), blocks[2].split("```")[0].strip()
    assert first.startswith("python3.11 -m venv .venv") and first.endswith("examples/quickstart.py")
    assert second.startswith("python3.11 -m venv .venv") and second.endswith("-m pytest -q -n auto")
    ci = (ROOT / ".ci" / "run").read_text()
    assert second.split(" && ")[-1].replace(".venv/bin/python", "") in ci
