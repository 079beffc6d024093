"""TFDS builders. Importing this package registers them with TFDS by name."""
from input_pipeline.datasets.embedded_faces import EmbeddedFaces

BUILDERS = {"embedded_faces": EmbeddedFaces}
