"""Serving: models handed to others as ONNX, and run with onnxruntime.

Owns: export of runs and heads to ONNX (``export``, ``onnxhead``), int8 quantisation
(``quantize``), parity checks against torch (``parity``), the metadata a graph carries
(``onnxmeta``) and the onnxruntime predictor and its sessions (``runtime``).

May import: every stage below it: ``fertool.core`` to ``fertool.train`` (it reads run folders).
"""
