"""The predictor image has no librosa, SciPy or TensorFlow: serving must never import them."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import REPO

SERVING_MODULES = (
    "kws.cli",
    "kws.audio",
    "kws.features",
    "kws.export",
    "kws.inference",
    "kws.serving.source",
    "kws.serving.model",
    "kws.serving.routes",
    "kws.serving.dataplane",
    "kws.serving.server",
)
TRAINING_ONLY = ("librosa", "scipy", "tensorflow", "keras", "numba", "sklearn", "matplotlib")


def test_importing_the_serving_path_imports_no_training_library() -> None:
    probe = (
        "import importlib, json, sys\n"
        f"for name in {SERVING_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {TRAINING_ONLY!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def test_a_clip_s_features_and_resampling_need_no_training_library() -> None:
    probe = (
        "import json, sys\n"
        "import numpy as np\n"
        "from kws.features import features_of_waveform\n"
        "from kws.params import FeatureParams\n"
        "features_of_waveform(np.ones(8000, np.float32) * 0.1, 8000, FeatureParams(lifter=12))\n"
        f"print(json.dumps(sorted(m for m in {TRAINING_ONLY!r} if m in sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(proc.stdout.splitlines()[-1]) == []
