"""install.py as ComfyUI-Manager runs it: never touches torch, uses pip or else uv, says what to do otherwise."""
import importlib.metadata
import sys

import pytest

import install


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def call(cmd):
        constraints = cmd[cmd.index("-c") + 1]
        with open(constraints, encoding="utf-8") as f:
            seen.append((cmd, f.read()))
        return 0

    monkeypatch.setattr(install.subprocess, "call", call)
    return seen


def test_nothing_is_installed_when_every_requirement_is_there(calls, capsys):
    assert install.main() == 0 and calls == []
    assert "nothing to do" in capsys.readouterr().out


def test_a_missing_requirement_is_installed_with_pip_and_torch_pinned(calls, monkeypatch):
    monkeypatch.setattr(install, "requirement_names", lambda: ["diffusers", "no-such-package-papa"])
    assert install.main() == 0
    [(cmd, pins)] = calls
    assert cmd[:4] == [sys.executable, "-m", "pip", "install"] and cmd[4] == "-r"
    assert f"torch=={importlib.metadata.version('torch')}" in pins.split()


def test_a_venv_without_pip_uses_uv(calls, monkeypatch):
    monkeypatch.setattr(install, "requirement_names", lambda: ["no-such-package-papa"])
    monkeypatch.setattr(install.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(install.shutil, "which", lambda name: "/opt/bin/uv" if name == "uv" else None)
    assert install.main() == 0
    assert calls[0][0][:5] == ["/opt/bin/uv", "pip", "install", "--python", sys.executable]


def test_neither_pip_nor_uv_says_what_to_do(calls, monkeypatch, capsys):
    monkeypatch.setattr(install, "requirement_names", lambda: ["no-such-package-papa"])
    monkeypatch.setattr(install.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(install.shutil, "which", lambda name: None)
    assert install.main() == 1 and calls == []
    assert "neither pip nor uv" in capsys.readouterr().err


def test_requirement_names_are_read_from_the_file():
    assert install.requirement_names() == ["diffusers", "peft", "safetensors", "numpy", "pillow"]
