"""Listing-quality scoring: the feature vector the ONNX model reads (`features`), shared by the
scheduled scorer and the training script, and the heuristic used when no model can run."""
