"""`ovdet export`: detectors as ONNX graphs with separate towers, so the vocabulary stays open.

The image tower, the class head and the text tower are separate graphs: an exported detector
encodes each image once and any vocabulary later (through the same text cache), and runs with
onnxruntime without torch (the backend `ovdet.backends.onnx`, which also reads the manifest);
`manifest.py` writes it. The exporters (`exporter.py`, `graphs.py`) need torch and onnx.
"""
