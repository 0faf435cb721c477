"""Inference service: the KServe ModelServer around kws.inference.Predictor.

`kws serve --model URI` starts it; see kws.serving.server for the settings and routes.
"""
