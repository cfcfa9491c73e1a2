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


LOADED_WITHOUT_KERAS_EXTRAS = """
import sys
from streamdet.core import tensorflow as loader

keras, tf = loader.load_tensorflow()
assert "sklearn" not in sys.modules and "matplotlib" not in sys.modules
assert not any(isinstance(f, loader._KerasOptionalImports) for f in sys.meta_path)

# While the guard is on, only an import asked by a Keras module is refused.
with loader._without_keras_optional_imports():
    try:
        exec("import sklearn.base", {"__name__": "keras.src.wrappers.fixes"})
    except ModuleNotFoundError as refused:
        assert refused.name == "sklearn"
    else:
        raise AssertionError("Keras got scikit-learn")
    exec("import sklearn.base", {"__name__": "streamdet.evaluation.tabular"})
from sklearn.ensemble import IsolationForest
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
layer = keras.layers.Dense(2)
print(IsolationForest.__name__, plt.figure.__name__, layer(tf.zeros((1, 3))).shape)
"""


def test_keras_loads_without_importing_scikit_learn_and_matplotlib_and_they_still_import():
    """Keras imports both when installed (1.8 s of every start, for wrappers streamdet
    never uses); the loader refuses them to Keras' modules only (any other module gets
    them, even while Keras loads), and both import normally afterwards."""
    result = subprocess.run(
        [sys.executable, "-c", LOADED_WITHOUT_KERAS_EXTRAS],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("IsolationForest figure (1, 2)"), result.stdout
