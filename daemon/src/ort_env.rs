//! Locating and initialising the ONNX Runtime library, and choosing execution providers.
