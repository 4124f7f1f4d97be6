"""Networks: backbones, their preprocessing and their weights.

Owns: the backbone registry and what each backbone declares (layer sequence, unfreeze order,
feature taps, preprocessing, weights: ``registry``; InceptionResnetV1 in ``inception_resnet``),
the expression model built on a backbone (``fernet``), running a model (``inference``:
probabilities, the export heads, the one flip-TTA helper), the input contract that travels with
a model (``preprocessing``), weights resolution and the TensorFlow graph reader used to convert
the CASIA weights (``weights``, ``tfgraph``).

May import: ``fertool.core``, ``fertool.data``, ``fertool.faces`` (face settings only).
"""
