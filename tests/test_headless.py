"""The base install is OpenCV's headless build; the window (run --show) is the gui extra, and its
absence is one sentence naming it."""
import tomllib
from pathlib import Path

import pytest

from runtime import UserError
from runtime.live import display

REPO = Path(__file__).resolve().parents[1]


def test_the_base_install_is_headless_and_the_window_is_an_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = [requirement.split(">")[0].split("=")[0].strip() for requirement in project["dependencies"]]
    assert "opencv-python-headless" in names and "opencv-python" not in names
    assert [r.split(">")[0] for r in project["optional-dependencies"]["gui"]] == ["opencv-python"]


def test_show_on_the_headless_build_is_one_sentence(monkeypatch):
    build = "General configuration\n  GUI:                           NONE\n    VTK support:  NO\n"
    monkeypatch.setattr(display.cv2, "getBuildInformation", lambda: build)
    monkeypatch.setenv("DISPLAY", ":0")
    with pytest.raises(UserError) as raised:
        display.Window()
    assert str(raised.value) == ("--show needs OpenCV's build with windows, and this one is headless (gamma-edge's "
                                 "default); install it with pip install 'gamma-edge[gui]', or use --save instead")
