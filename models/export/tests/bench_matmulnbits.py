"""MatMulNBits at M = 1 (one decoded token) on ONNX Runtime's CPU provider: time per call and GB/s
for a weight shape at 4 and 8 bits, cache-cold (several copies of the weights cycled, so they come
from memory as a model's do).

  python3 tests/bench_matmulnbits.py [--k 2048] [--n 32000] [--threads 1] [--copies 4]

Not a test: it prints figures (the head of the Qwen3-like peer shape by default).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def model(k: int, n: int, bits: int, block: int, accuracy: int, seed: int) -> tuple[bytes, int]:
    """A one-node MatMulNBits graph with random asymmetric blocks; returns it and its weight bytes."""
    blocks, blob = k // block, block * bits // 8
    rng = np.random.default_rng(seed)
    b = rng.integers(0, 255, size=(n, blocks, blob), dtype=np.uint8)
    s = (rng.random((n * blocks,), dtype=np.float32) * 0.01).astype(np.float32)
    z = rng.integers(0, 255, size=(n * ((blocks * bits + 7) // 8),), dtype=np.uint8)
    inits = [numpy_helper.from_array(b, "B"), numpy_helper.from_array(s, "S"), numpy_helper.from_array(z, "Z")]
    node = helper.make_node("MatMulNBits", ["X", "B", "S", "Z"], ["Y"], domain="com.microsoft", K=k, N=n,
                            bits=bits, block_size=block, accuracy_level=accuracy)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, n])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)])
    return m.SerializeToString(), b.nbytes + s.nbytes + z.nbytes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=2048)
    p.add_argument("--n", type=int, default=32000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--copies", type=int, default=4)
    p.add_argument("--seconds", type=float, default=2.0)
    a = p.parse_args()
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    x = np.random.default_rng(0).random((1, a.k), dtype=np.float32)
    for bits, block in ((8, 32), (4, 16), (4, 32), (4, 64)):
        sessions, size = [], 0
        for i in range(a.copies):
            buf, size = model(a.k, a.n, bits, block, 4, i)
            sessions.append(ort.InferenceSession(buf, so, providers=["CPUExecutionProvider"]))
        for s in sessions:
            s.run(None, {"X": x})
        start, calls = time.perf_counter(), 0
        while time.perf_counter() - start < a.seconds:
            sessions[calls % a.copies].run(None, {"X": x})
            calls += 1
        dt = (time.perf_counter() - start) / calls
        print(f"K={a.k} N={a.n} bits={bits} block={block} accuracy 4, {a.threads} thread(s): "
              f"{dt * 1e3:7.2f} ms per call, {size / dt / 1e9:5.2f} GB/s ({size / 1e6:.1f} MB of weights)")


if __name__ == "__main__":
    main()
