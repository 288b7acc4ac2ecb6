"""The peers' own suites on ours: aiogram's storage tests and python-telegram-bot's persistence
tests, from the source distributions of the installed versions, run against our storage and
persistence on a real Redis.

Their files are downloaded at test time (``pip download --no-deps --no-binary :all:``) into a
cache directory (SESSIONCACHE_PEER_CACHE, default ~/.cache/sessioncache/peers) and never copied
into this repository: their licences (MIT for aiogram, LGPLv3 for PTB) differ from ours. Each
suite runs as a pytest subprocess inside the unpacked distribution with our plugin
(tests/support/aiogram_peer_plugin.py, tests/support/ptb_peer_plugin.py); the run must end with
0 failures and exactly the expected number of passes. Every case left out is listed below with
its reason (and in docs/integrations.md).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOWNLOAD_TIMEOUT = 600

# -- python-telegram-bot ------------------------------------------------------------------------

PTB_FILES = [
    "tests/ext/test_basepersistence.py",
    "tests/ext/test_picklepersistence.py",
    "tests/ext/test_dictpersistence.py",
]
_PICKLE = "tests/ext/test_picklepersistence.py::TestPicklePersistence::"
PTB_APPLY_PICKLE = {
    "test_slot_behaviour": "PicklePersistence's slot check, run on ours",
    "test_no_files_present_multi_file": "an empty store returns empty data, run on ours",
}
PTB_LEFT_OUT_FILES = {
    "tests/ext/test_dictpersistence.py": (
        "DictPersistence's JSON input and output (every case builds a DictPersistence from "
        "JSON strings or reads its *_json properties)"
    ),
    "tests/ext/test_picklepersistence.py (every other case)": (
        "PicklePersistence's files: single_file/on_flush/filepath handling, bad or custom "
        "pickles, file contents after a write (ours never pickles and has no file)"
    ),
}
_BASE = "tests/ext/test_basepersistence.py::TestBasePersistence::"
PTB_LEFT_OUT_LAZY = {
    _BASE + "test_initialization_basic[papp0]": (
        "asserts that stored user and chat data are in the application right after start; "
        "lazy=True loads them when an update or job uses them (the documented difference)"
    ),
}
PTB_EXPECTED = {"loading": 63, "lazy": 62}  # 61 base cases + 2 pickle cases; lazy: 1 left out

# -- aiogram ------------------------------------------------------------------------------------

AIOGRAM_FILES = ["tests/test_fsm/storage/test_storages.py"]
_STORAGES = "tests/test_fsm/storage/test_storages.py::TestStorages::"
AIOGRAM_LEFT_OUT = {
    f"{_STORAGES}{test}[{storage}]": "MongoDB storages: not ours"
    for test in ("test_set_state", "test_set_data", "test_update_data")
    for storage in ("mongo_storage", "pymongo_storage")
}
AIOGRAM_EXPECTED = 6  # 3 tests x (ours on memory://, ours on the real Redis)


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "sessioncache" / "peers"
    path = Path(os.environ.get("SESSIONCACHE_PEER_CACHE", default))
    path.mkdir(parents=True, exist_ok=True)
    return path


def fetch_sdist(project: str) -> Path:
    """The source distribution of the installed version of project, from the cache or the
    package registry (once; later runs use the cached file)."""
    version = metadata.version(project)
    # The file is named <project with "_">-<version>.tar.gz (older uploads kept the "-").
    wanted = {f"{name}-{version}.tar.gz".lower() for name in (project, project.replace("-", "_"))}
    cache = cache_dir()
    for found in cache.glob("*.tar.gz"):
        if found.name.lower() in wanted:
            return found
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:"]
        cmd += ["--no-build-isolation", "--disable-pip-version-check", "-q", "-d", tmp]
        try:
            done = subprocess.run(
                [*cmd, f"{project}=={version}"],
                capture_output=True,
                text=True,
                timeout=DOWNLOAD_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            done = None
        tarballs = list(Path(tmp).glob("*.tar.gz"))
        if done is None or done.returncode != 0 or len(tarballs) != 1:
            detail = "timed out" if done is None else (done.stderr or done.stdout)[-1500:]
            pytest.fail(
                f"could not download the source distribution of {project}=={version} from the "
                f"package registry ({detail.strip()}). These tests need it once; put "
                f"the .tar.gz in {cache} (or set SESSIONCACHE_PEER_CACHE) and run again.",
                pytrace=False,
            )
        target = cache / tarballs[0].name
        os.replace(tarballs[0], target)  # atomic: a concurrent run never sees half a file
        return target


def unpack(tarball: Path, into: Path) -> Path:
    with tarfile.open(tarball) as tar:
        tar.extractall(into, filter="data")
    (root,) = [p for p in into.iterdir() if p.is_dir()]
    return root


def run_suite(
    root: Path,
    files: list[str],
    plugin: str,
    extra: list[str],
    env: dict[str, str],
    report: Path,
) -> tuple[dict[str, int], str]:
    """Run the peer's files under our plugin; the counts from its JUnit report."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-p", plugin]
    # One event loop for the whole run, as the peers' pinned pytest-asyncio versions use.
    cmd += ["-o", "addopts=", "-o", "asyncio_default_fixture_loop_scope=session"]
    cmd += ["-o", "asyncio_default_test_loop_scope=session"]
    cmd += ["--junitxml", str(report), *extra, *files]
    full_env = {**os.environ, **env}
    # The plugins load as top-level modules (``-p ptb_peer_plugin``) from tests/support/.
    full_env["PYTHONPATH"] = os.pathsep.join([str(HERE / "support"), str(ROOT)])
    done = subprocess.run(
        cmd, cwd=root, env=full_env, capture_output=True, text=True, timeout=1800, check=False
    )
    output = done.stdout[-20000:] + done.stderr[-5000:]
    if not report.exists():
        pytest.fail(f"the peer suite did not run:\n{output}", pytrace=False)
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite[0]
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    return counts, output


@pytest.fixture(scope="module")
def peer_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("peers")


def _deselect(ids: list[str]) -> list[str]:
    return [arg for nodeid in ids for arg in ("--deselect", nodeid)]


def ptb_selection() -> list[str]:
    """Every case of the base file, and the pickle cases that apply, by node id (a renamed
    case makes pytest fail the run: "not found")."""
    return [PTB_FILES[0], *(_PICKLE + name for name in PTB_APPLY_PICKLE)]


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["loading", "lazy"])
def test_ptb_persistence_suite(redis_url: str, peer_root: Path, mode: str) -> None:
    tree = peer_root / f"ptb-{mode}"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir()
    root = unpack(fetch_sdist("python-telegram-bot"), tree)
    left_out = list(PTB_LEFT_OUT_LAZY) if mode == "lazy" else []
    env = {"SESSIONCACHE_PEER_URL": redis_url, "SESSIONCACHE_PEER_LAZY": str(int(mode == "lazy"))}
    # pythonpath="" tests the installed PTB, not the distribution's src/ tree.
    extra = ["-o", "pythonpath=", *_deselect(left_out)]
    counts, output = run_suite(
        root, ptb_selection(), "ptb_peer_plugin", extra, env, tree / "report.xml"
    )
    assert (counts["failures"], counts["errors"]) == (0, 0), output
    assert counts["skipped"] == 0, output
    assert counts["passed"] == PTB_EXPECTED[mode], output


@pytest.mark.slow
def test_aiogram_storage_suite(redis_url: str, peer_root: Path) -> None:
    tree = peer_root / "aiogram"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir()
    root = unpack(fetch_sdist("aiogram"), tree)
    extra = ["--noconftest", *_deselect(list(AIOGRAM_LEFT_OUT))]
    counts, output = run_suite(
        root,
        AIOGRAM_FILES,
        "aiogram_peer_plugin",
        extra,
        {"SESSIONCACHE_PEER_URL": redis_url},
        tree / "report.xml",
    )
    assert (counts["failures"], counts["errors"], counts["skipped"]) == (0, 0, 0), output
    assert counts["passed"] == AIOGRAM_EXPECTED, output


def test_no_peer_file_is_in_this_repository() -> None:
    """Their licences differ from ours: the suites are fetched, never copied here."""
    for path in ROOT.rglob("test_*persistence.py"):
        assert ".ci" in path.parts or "venv" in str(path), path
    assert not list(ROOT.glob("tests/test_fsm*")) and not (ROOT / "tests" / "ext").exists()


def test_an_unreachable_registry_fails_with_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No network and an empty cache: the run fails and says what to do (never a skip)."""
    monkeypatch.setenv("SESSIONCACHE_PEER_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # as if no registry could be reached
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(pytest.fail.Exception) as failed:
        fetch_sdist("aiogram")
    message = str(failed.value)
    assert "could not download the source distribution of aiogram==" in message
    assert str(tmp_path) in message and "SESSIONCACHE_PEER_CACHE" in message
    assert [p.name for p in tmp_path.iterdir()] == []  # no half-written file left behind


def test_a_cached_distribution_is_used_without_the_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = metadata.version("aiogram")
    cached = tmp_path / f"aiogram-{version}.tar.gz"
    cached.write_bytes(b"")
    monkeypatch.setenv("SESSIONCACHE_PEER_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    assert fetch_sdist("aiogram") == cached
