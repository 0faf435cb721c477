#!/bin/sh
# Slim the predictor's venv (build stage): what serving never loads goes, nothing it loads.
#  - the packages' own test suites (pandas and numpy ship ~60 MB of them);
#  - the symbol tables of two extension modules that their wheels ship unstripped (uvloop,
#    ml_dtypes: 35 MB; not the auditwheel-patched libraries, which `strip` would break);
#  - bytecode of modules serving never imports (~100 MB): all of it is deleted, then the
#    serving path is imported once so that Python writes bytecode for exactly what it loads,
#    and the cold start pays no compilation.
set -eu
venv=${1:-/opt/venv}
site=$(echo "$venv"/lib/python3*/site-packages)
find "$site" -depth -type d \( -name tests -o -name test \) -path "*/site-packages/*/*" -exec rm -rf {} +
strip --strip-unneeded "$site"/uvloop/loop.*.so "$site"/ml_dtypes/_ml_dtypes_ext.*.so
find "$site" -depth -type d -name __pycache__ -exec rm -rf {} +
cd /tmp
"$venv/bin/python" - <<'PY'
from kws.serving.server import import_kserve

import_kserve()
import kserve.model_server  # noqa: E402,F401
import uvicorn.loops.uvloop  # noqa: E402,F401
import uvicorn.protocols.http.httptools_impl  # noqa: E402,F401
import uvicorn.protocols.websockets.websockets_impl  # noqa: E402,F401
import uvicorn.lifespan.on  # noqa: E402,F401

import kws.cli, kws.registry, kws.serving.dataplane, kws.serving.routes  # noqa: E402,F401
import mlflow.artifacts, mlflow.tracking  # noqa: E402,F401  (models:/ URIs)
PY
