"""Serving: models handed to others as ONNX, and run with onnxruntime.

Owns: export of runs and heads to ONNX (``export``, ``onnxhead``; the shared steps: torch to
ONNX, checks, staging, publishing in ``graph``), int8 quantisation (``quantize``), parity checks
against torch (``parity``), the metadata a graph carries (``onnxmeta``), onnxruntime sessions
(``session``: the one factory) and the predictor (``runtime``).

May import: every stage below it: ``fertool.core`` to ``fertool.train`` (it reads run folders).
"""
