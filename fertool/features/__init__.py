"""Features for classifiers: hand-crafted descriptors and network embeddings.

Owns: LPQ and PHOG and their scikit-learn transformers (``descriptors``), embeddings of face
crops and folders by a backbone (``embed``).

May import: ``fertool.core``, ``fertool.data``, ``fertool.faces``, ``fertool.models``.
"""
