//! The fixed cost of one ONNX Runtime run: a one-node graph (`y = -x` on one float) run through the
//! same path as the model's graphs, so `moed bench` can show what each run costs outside kernels.

use std::time::Instant;

use super::graph::{Dim, Graph, Interface, TensorSpec};
use super::stats::Counters;
use super::{Engine, EngineError};

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited protobuf field (wire type 2).
fn field(number: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![(number << 3) | 2];
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// A varint protobuf field (wire type 0).
fn int_field(number: u8, value: u64) -> Vec<u8> {
    let mut out = vec![number << 3];
    varint(value, &mut out);
    out
}

/// `ValueInfoProto` of a float tensor `[T, 1]`.
fn value_info(name: &str) -> Vec<u8> {
    let dims = [field(1, &field(2, b"T")), field(1, &int_field(1, 1))].concat();
    let tensor = [int_field(1, 1), field(2, &dims)].concat();
    [field(1, name.as_bytes()), field(2, &field(1, &tensor))].concat()
}

/// The serialized `ModelProto`: IR version 8, opset 17, one `Neg` node from `x` to `y`.
pub(crate) fn tiny_model() -> Vec<u8> {
    let node = [field(1, b"x"), field(2, b"y"), field(4, b"Neg")].concat();
    let graph = [
        field(1, &node),
        field(2, b"probe"),
        field(11, &value_info("x")),
        field(12, &value_info("y")),
    ]
    .concat();
    let opset = [field(1, b""), int_field(2, 17)].concat();
    [int_field(1, 8), field(8, &opset), field(7, &graph)].concat()
}

/// Mean wall time of one run of the tiny graph, in microseconds, over `runs` runs (after a few
/// warm-up runs).
pub(crate) fn run_overhead_us(engine: &Engine, runs: usize) -> Result<f64, EngineError> {
    let iface = Interface {
        inputs: vec![TensorSpec::f32("x", vec![Dim::Tokens, Dim::Fixed(1)])],
        outputs: vec![TensorSpec::f32("y", vec![Dim::Tokens, Dim::Fixed(1)])],
    };
    let graph = Graph::from_memory(
        engine.rt,
        engine.provider,
        "<run-overhead probe>",
        &tiny_model(),
        &iface,
    )?;
    let counters = Counters::new(&[]);
    let x = [1.0f32];
    let mut y = [0.0f32];
    let mut once = || {
        graph.run(
            &[&*graph.input(&[1, 1], &x)?],
            &[&*graph.output(&[1, 1], &mut y)?],
            &counters,
        )
    };
    for _ in 0..16 {
        once()?;
    }
    let runs = runs.max(1);
    let start = Instant::now();
    for _ in 0..runs {
        once()?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / runs as f64)
}

#[cfg(test)]
mod tests {
    use super::{field, varint};

    #[test]
    fn varints_and_fields_encode_as_protobuf() {
        let mut v = Vec::new();
        varint(300, &mut v);
        assert_eq!(v, [0xac, 0x02]);
        assert_eq!(field(1, b"ab"), [0x0a, 2, b'a', b'b']);
    }
}
