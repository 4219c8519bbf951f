"""ONNX graph builders for the package's graphs (embed, attention, router, FFNs, head)."""
