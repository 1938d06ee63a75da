"""The default models, named in one place: every command and library entry point takes these
(imports nothing, so the CLI's parsers can name them without loading anything)."""

DEFAULT_DETECTOR = "owlv2-b16"  # detect, eval, video, label, calibrate, serve, export; Detector.from_pretrained
DEFAULT_CLASSIFIER = "clip-b32"  # classify, explain, audit; Classifier / Explainer.from_pretrained
