"""Networks: backbones, their preprocessing and their weights.

Owns: the backbones and what each declares (layer sequence, unfreeze order, feature taps,
preprocessing, weights), the expression model built on a backbone (``fernet``), the input
contract that travels with a model (``preprocessing``), weights resolution and the TensorFlow
graph reader used to convert the CASIA weights (``weights``, ``tfgraph``).

May import: ``fertool.core``, ``fertool.data``, ``fertool.faces`` (face settings only).
"""
