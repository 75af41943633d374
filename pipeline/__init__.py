"""The reconstruction job's stages, one module each, each testable without Ray:
io (URLs over fsspec), decode (images -> model input, validation), infer (the
model actor), sink (shards + manifests), resume, summary, results (readers).
Importing this package must never import TensorFlow or start Ray.
"""
