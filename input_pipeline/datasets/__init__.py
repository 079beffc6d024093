"""TFDS builders. Importing this package registers them with TFDS by name."""
from input_pipeline.datasets.embedded_faces import EmbeddedFaces
from input_pipeline.datasets.embedded_photos import EmbeddedPhotos
from input_pipeline.datasets.face_images import FaceImages
from input_pipeline.datasets.face_videos import FaceVideos

BUILDERS = {"embedded_faces": EmbeddedFaces, "embedded_photos": EmbeddedPhotos,
            "face_images": FaceImages, "face_videos": FaceVideos}
