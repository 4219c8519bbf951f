//! Benchmarks behind `moed bench`: prefill/decode speed, sparse against dense, memory bandwidth.
