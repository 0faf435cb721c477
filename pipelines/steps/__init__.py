"""The training pipeline's steps, one module each; every step only calls kws.stages."""
