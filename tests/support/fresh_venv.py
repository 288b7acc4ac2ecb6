"""A fresh virtualenv holding the built wheel and its declared dependencies, and nothing else.

The wheel is installed by pip (``pip --python VENV install --no-deps``: its console script,
its RECORD); the dependencies are resolved from the wheel's Requires-Dist, recursively with
their extras and markers, and linked from the test environment into the venv's site-packages
(no network, no registry). So the venv sees exactly what ``pip install sessioncache`` would
give it, and ``pip check`` confirms every requirement is met: a dependency missing from
pyproject.toml makes the programs run there fail.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent.parent


def build_wheel(outdir: Path) -> tuple[Path, list[str]]:
    """Build the project's wheel into ``outdir``: (wheel, the names it holds)."""
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(outdir)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = outdir.glob("sessioncache-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return wheel, zf.namelist()


def requirements_of(wheel: Path) -> list[str]:
    """The wheel's Requires-Dist lines."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = zf.read(name).decode()
    return [line.split(": ", 1)[1] for line in metadata.splitlines()
            if line.startswith("Requires-Dist: ")]  # fmt: skip


def _applies(req: Requirement, extras: frozenset[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in extras | {""})


def resolve(requirements: list[str]) -> list[md.Distribution]:
    """The installed distributions these requirements need, transitively (each once)."""
    found: dict[str, md.Distribution] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    queue = [(Requirement(r), frozenset[str]()) for r in requirements]
    while queue:
        req, extras = queue.pop()
        if not _applies(req, extras):
            continue
        dist = md.distribution(req.name)  # PackageNotFoundError: the test env lacks it
        assert req.specifier.contains(dist.version, prereleases=True), (req, dist.version)
        key, wanted = canonicalize_name(req.name), frozenset(req.extras)
        if (key, wanted) in seen:
            continue
        seen.add((key, wanted))
        found[key] = dist
        queue += [(Requirement(r), wanted) for r in dist.requires or []]
    return list(found.values())


@dataclass
class FreshInstall:
    """The wheel installed in its own venv."""

    wheel: Path
    names: list[str]
    """The file names inside the wheel."""
    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def env(self, home: Path) -> dict[str, str]:
        """An environment with no redis-server or valkey-server on PATH, a fresh HOME, and
        none of the test run's PYTHONPATH or SESSIONCACHE_* settings."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTHON", "SESSIONCACHE", "XDG_", "VIRTUAL_ENV"))
        }
        empty = home / "empty-bin"
        empty.mkdir(parents=True, exist_ok=True)
        env.update(PATH=str(empty), HOME=str(home), TMPDIR=str(home))
        return env


def fresh_install(workdir: Path) -> FreshInstall:
    """Build the wheel and install it, with its dependencies only, in ``workdir/venv``."""
    wheel, names = build_wheel(workdir)
    venv = workdir / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )  # fmt: skip
    for dist in resolve(requirements_of(wheel)):
        base = Path(str(dist.locate_file("")))
        tops = {Path(str(f)).parts[0] for f in dist.files or []}
        for top in sorted(t for t in tops if t != ".." and not t.startswith("__")):
            source = base / top
            if source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True)
    subprocess.run([*pip, "check"], check=True, capture_output=True)
    return FreshInstall(wheel, names, venv)
