"""kws: keyword spotting from versioned data to a served, monitored model."""

__version__ = "0.1.0"
