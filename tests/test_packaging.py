"""The wheel ships every Lua script and loads them through importlib.resources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def built_wheel(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """Build the wheel into tmp_path and unpack it into tmp_path/site: (wheel, site, names)."""
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("sessioncache-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        zf.extractall(site)
    return wheel, site, names


def test_wheel_contains_and_loads_every_script(tmp_path: Path) -> None:
    _, site, names = built_wheel(tmp_path)
    lua = ROOT / "lua"
    shipped = sorted(str(p.relative_to(lua)) for p in lua.rglob("*.lua"))
    head = "sessioncache/lua/"
    inside = sorted(n[len(head) :] for n in names if n.startswith(head))
    assert [n for n in inside if n.endswith(".lua")] == shipped
    expected = sorted(p.name for p in lua.glob("*.lua"))
    assert "sessioncache/py.typed" in names
    probe = (
        "import json, sessioncache.scripts as s;"
        "print(json.dumps({'dir': str(s.lua_dir()), 'names': sorted(s.load_scripts())}))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    out = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); {probe}"],
        cwd=tmp_path,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout)
    assert result["dir"].startswith(str(site))
    assert result["names"] == [name[: -len(".lua")] for name in expected]
