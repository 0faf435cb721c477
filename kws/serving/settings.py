"""What `kws serve` can set (light: no KServe, no prometheus_client, no model)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kws.drift import DEFAULT_WINDOW
from kws.serving.decode import Limits

DEFAULT_PORT = 8080


@dataclass(frozen=True)
class ServeSettings:
    """Everything `kws serve` can set."""

    model_uri: str
    name: str = "kws"
    port: int = DEFAULT_PORT
    limits: Limits = field(default_factory=Limits)
    poll_seconds: float = 30.0
    num_threads: int | None = None
    access_log: bool = False
    drift_window: int = DEFAULT_WINDOW
    workers: int = 1
