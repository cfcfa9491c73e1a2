"""TensorFlow's two builds: the ``cpu`` and ``gpu`` extras, and what the daemon says without one."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]


def test_each_extra_brings_one_tensorflow_build_and_the_base_install_none():
    wanted = [Requirement(line) for line in requires("streamdet") or []]
    tensorflows = {
        (r.name, tuple(sorted(r.extras)), str(r.marker)): r
        for r in wanted
        if r.name.startswith("tensorflow")
    }
    assert set(tensorflows) == {
        ("tensorflow-cpu", (), 'extra == "cpu"'),
        ("tensorflow", ("and-cuda",), 'extra == "gpu"'),
    }
    # Both builds within the same versions: a model saved by one loads in the other.
    cpu, gpu = (r.specifier for r in tensorflows.values())
    assert str(cpu) == str(gpu)


def test_without_tensorflow_the_daemon_says_which_extra_to_install(tmp_path):
    blocked = (
        "import sys; sys.modules['tensorflow'] = None\n"
        "from streamdet.cli import main\n"
        f"sys.exit(main(['run', '--config', {str(ROOT / 'config.yaml')!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", blocked], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "TensorFlow is not installed" in result.stderr
    assert "pip install 'streamdet[cpu]'" in result.stderr
    assert "pip install 'streamdet[gpu]'" in result.stderr
    assert "Traceback" not in result.stderr
