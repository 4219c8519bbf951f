//! The sparse MoE engine: per-layer attention and router graphs, then only the routed experts.
