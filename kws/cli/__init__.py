"""`kws` command line: thin adapters over the kws library, all reading params.yaml.

Commands import the library modules they run when they run, so `kws --help`, `kws predict`
and `kws serve` never load TensorFlow, MLflow or ZenML.
"""

from __future__ import annotations

import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow

import typer

from kws.cli import demo, deploy, experiments, monitor, pipeline, registry, retrain, serve, stages
from kws.errors import KwsError

app = typer.Typer(
    help="Keyword spotting: data, features, training, evaluation, export and prediction.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(stages.data_app, name="data")
for command in stages.COMMANDS:
    app.command()(command)
app.command()(serve.serve)
app.add_typer(registry.app, name="registry")
app.add_typer(experiments.experiments_app, name="experiments")
app.command()(experiments.tune)
app.add_typer(experiments.report_app, name="report")
app.add_typer(pipeline.app, name="pipeline")
app.add_typer(deploy.app, name="deploy")
app.add_typer(monitor.app, name="monitor")
app.command()(retrain.retrain)
app.command()(demo.demo)

NOISY_LOGGERS = ("tensorflow", "absl", "h5py", "numba", "matplotlib", "mlflow", "alembic")


def main() -> None:
    """Entry point: expected errors become one line on stderr and exit code 1."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        app()
    except KwsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # a bug: keep it to one line unless asked for the traceback
        if os.environ.get("KWS_DEBUG"):
            raise
        print(
            f"error: unexpected {type(exc).__name__}: {exc} (KWS_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        sys.exit(2)
