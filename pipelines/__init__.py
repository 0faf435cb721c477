"""ZenML pipelines and stack definitions: thin adapters composing `kws` functions."""
