use super::*;

fn int_attr(name: &str, v: i64) -> Vec<u8> {
    let mut a = Vec::new();
    put_len_field(&mut a, ATTR_NAME, name.as_bytes());
    put_varint(&mut a, u64::from(ATTR_I << 3));
    put_varint(&mut a, v as u64);
    put_varint(&mut a, (20 << 3) as u64);
    put_varint(&mut a, 2); // AttributeProto.type = INT
    a
}

fn node(op: &str, domain: &str, inputs: &[&str], attrs: &[(&str, i64)]) -> Vec<u8> {
    let mut n = Vec::new();
    for i in inputs {
        put_len_field(&mut n, NODE_INPUT, i.as_bytes());
    }
    put_len_field(&mut n, 2, b"y");
    put_len_field(&mut n, NODE_OP_TYPE, op.as_bytes());
    for (name, v) in attrs {
        put_len_field(&mut n, NODE_ATTRIBUTE, &int_attr(name, *v));
    }
    if !domain.is_empty() {
        put_len_field(&mut n, NODE_DOMAIN, domain.as_bytes());
    }
    n
}

fn float_attr(name: &str, v: f32) -> Vec<u8> {
    let mut a = Vec::new();
    put_len_field(&mut a, ATTR_NAME, name.as_bytes());
    put_varint(&mut a, u64::from(ATTR_F << 3 | u32::from(FIXED32)));
    a.extend_from_slice(&v.to_le_bytes());
    put_varint(&mut a, (20 << 3) as u64);
    put_varint(&mut a, 1); // AttributeProto.type = FLOAT
    a
}

fn nbits(c: &Candidate) -> NbitsNode {
    match c {
        Candidate::Nbits(n) => *n,
        other => panic!("expected MatMulNBits, got {other:?}"),
    }
}

const ATTRS: [(&str, i64); 5] = [
    ("K", 64),
    ("N", 32),
    ("bits", 4),
    ("block_size", 32),
    ("accuracy_level", 4),
];

fn model(nodes: &[Vec<u8>]) -> Vec<u8> {
    let mut graph = Vec::new();
    for n in nodes {
        put_len_field(&mut graph, GRAPH_NODE, n);
    }
    put_len_field(&mut graph, 2, b"g");
    put_len_field(&mut graph, 5, b"\x08\x01\x08\x02initializer-bytes"); // copied untouched
    let mut m = Vec::new();
    put_varint(&mut m, 1 << 3);
    put_varint(&mut m, 8); // ir_version
    let mut opset = Vec::new();
    put_len_field(&mut opset, OPSET_DOMAIN, MS_DOMAIN);
    put_varint(&mut opset, u64::from(OPSET_VERSION << 3));
    put_varint(&mut opset, 1);
    put_len_field(&mut m, MODEL_OPSET_IMPORT, &opset);
    put_len_field(&mut m, MODEL_GRAPH, &graph);
    m
}

/// (op_type, domain) of each node of the model's graph, and its opset import domains.
fn summary(model: &[u8]) -> (Vec<(String, String)>, Vec<String>) {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let (mut nodes, mut opsets) = (Vec::new(), Vec::new());
    for f in Fields::new(model) {
        let f = f.unwrap();
        if f.number == MODEL_OPSET_IMPORT {
            for o in Fields::new(f.payload) {
                let o = o.unwrap();
                if o.number == OPSET_DOMAIN {
                    opsets.push(text(o.payload));
                }
            }
        }
        if f.number == MODEL_GRAPH {
            for g in Fields::new(f.payload) {
                let g = g.unwrap();
                if g.number == GRAPH_NODE {
                    let (mut op, mut dom) = (String::new(), String::new());
                    for nf in Fields::new(g.payload) {
                        let nf = nf.unwrap();
                        match nf.number {
                            NODE_OP_TYPE => op = text(nf.payload),
                            NODE_DOMAIN => dom = text(nf.payload),
                            _ => {}
                        }
                    }
                    nodes.push((op, dom));
                }
            }
        }
    }
    (nodes, opsets)
}

#[test]
fn accepted_nodes_move_and_the_rest_is_kept() {
    let m = model(&[
        node(
            "MatMulNBits",
            "com.microsoft",
            &["x", "b", "s", "z"],
            &ATTRS,
        ),
        node("Sigmoid", "", &["y"], &[]),
        node(
            "MatMulNBits",
            "com.microsoft",
            &["y", "b2", "s2"],
            &[("bits", 8)],
        ),
    ]);
    let seen = std::sync::Mutex::new(Vec::new());
    let (edited, moved) = redirect(&m, "ai.moed", |c| {
        let n = nbits(c);
        seen.lock().unwrap().push(n);
        n.bits == 4
    })
    .unwrap()
    .unwrap();
    assert_eq!(moved, 1);
    let seen = seen.into_inner().unwrap();
    assert_eq!(
        seen[0],
        NbitsNode {
            k: 64,
            n: 32,
            bits: 4,
            block_size: 32,
            accuracy_level: 4,
            inputs: 4,
            zero_points: true,
            extra_inputs: false,
        }
    );
    assert_eq!((seen[1].inputs, seen[1].zero_points), (3, false));
    let (nodes, opsets) = summary(&edited);
    let pairs: Vec<(&str, &str)> = nodes
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("MatMulNBits", "ai.moed"),
            ("Sigmoid", ""),
            ("MatMulNBits", "com.microsoft")
        ]
    );
    assert_eq!(opsets, ["com.microsoft", "ai.moed"]);
    let window = b"initializer-bytes";
    assert!(edited.windows(window.len()).any(|w| w == window));
}

#[test]
fn nothing_accepted_is_none() {
    let m = model(&[node(
        "MatMulNBits",
        "com.microsoft",
        &["x", "b", "s"],
        &ATTRS,
    )]);
    assert_eq!(redirect(&m, "ai.moed", |_| false), Ok(None));
    let other = model(&[node("MatMulNBits", "", &["x", "b", "s"], &ATTRS)]);
    assert_eq!(redirect(&other, "ai.moed", |_| true), Ok(None));
}

#[test]
fn empty_optional_inputs_are_not_counted_as_named() {
    let m = model(&[node(
        "MatMulNBits",
        "com.microsoft",
        &["x", "b", "s", "", "g"],
        &ATTRS,
    )]);
    let seen = std::sync::Mutex::new(None);
    let _ = redirect(&m, "ai.moed", |c| {
        *seen.lock().unwrap() = Some(nbits(c));
        false
    });
    let n = seen.into_inner().unwrap().unwrap();
    assert_eq!((n.inputs, n.zero_points, n.extra_inputs), (5, false, true));
}

#[test]
fn malformed_bytes_are_an_error_not_a_panic() {
    let m = model(&[node(
        "MatMulNBits",
        "com.microsoft",
        &["x", "b", "s"],
        &ATTRS,
    )]);
    for cut in [1, 3, m.len() / 2, m.len() - 1] {
        assert!(
            redirect(&m[..cut], "ai.moed", |_| true).is_err(),
            "cut at {cut}"
        );
    }
    assert!(redirect(&[0x0f], "ai.moed", |_| true).is_err());
    assert!(redirect(&[0x08, 0xff, 0xff], "ai.moed", |_| true).is_err());
    assert_eq!(redirect(&[], "ai.moed", |_| true), Ok(None));
}

/// Nodes in the model's graphs, walking only what the edit walks.
fn node_count(model: &[u8]) -> Option<usize> {
    let mut n = 0;
    for f in Fields::new(model) {
        let f = f.ok()?;
        if f.number == MODEL_GRAPH && f.wire == LEN {
            for g in Fields::new(f.payload) {
                n += usize::from(g.ok()?.number == GRAPH_NODE);
            }
        }
    }
    Some(n)
}

proptest::proptest! {
    /// A graph file is untrusted input: any bytes, or a valid model with bytes changed, give a
    /// result or an error, never a panic, and an edit keeps every node.
    #[test]
    fn any_bytes_give_a_result_or_an_error(
        noise in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
        flips in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>()), 0..8),
    ) {
        let _ = redirect(&noise, "ai.moed", |_| true);
        let mut m = model(&[
            node("MatMulNBits", "com.microsoft", &["x", "b", "s", "z"], &ATTRS),
            node("Sigmoid", "", &["y"], &[]),
        ]);
        for (at, byte) in flips {
            let len = m.len();
            m[at % len] = byte;
        }
        if let Ok(Some((edited, _))) = redirect(&m, "ai.moed", |_| true) {
            proptest::prop_assert_eq!(node_count(&m), node_count(&edited));
        }
    }
}

#[test]
fn group_query_attention_is_read_with_its_float_attributes() {
    let mut n = node(
        "GroupQueryAttention",
        "com.microsoft",
        &["q", "k", "v", "pk", "pv", "sl", "tl", "", ""],
        &[("num_heads", 32), ("kv_num_heads", 4)],
    );
    put_len_field(&mut n, NODE_ATTRIBUTE, &float_attr("scale", 0.125));
    put_len_field(&mut n, 2, b"present_k");
    let m = model(&[n.clone()]);
    let seen = std::sync::Mutex::new(None);
    let out = redirect(&m, "ai.moed", |c| {
        *seen.lock().unwrap() = Some(*c);
        true
    });
    assert!(matches!(out, Ok(Some((_, 1)))));
    let Some(Candidate::Gqa(g)) = seen.into_inner().unwrap() else {
        panic!("not read as GroupQueryAttention");
    };
    assert_eq!((g.num_heads, g.kv_num_heads, g.scale), (32, 4, 0.125));
    assert_eq!((g.local_window_size, g.do_rotary, g.softcap), (-1, 0, 0.0));
    assert_eq!(
        (g.core_inputs, g.extra_inputs, g.outputs),
        ([true; 7], false, 2)
    );
    assert!(!g.unknown_attributes);

    // A later input (position ids) and an attribute moed does not know are both visible.
    let mut n = node(
        "GroupQueryAttention",
        "com.microsoft",
        &["q", "k", "v", "pk", "pv", "sl", "tl", "", "", "pos"],
        &[("num_heads", 8), ("kv_num_heads", 8), ("new_thing", 1)],
    );
    put_len_field(&mut n, NODE_ATTRIBUTE, &float_attr("softcap", 30.0));
    let seen = std::sync::Mutex::new(None);
    let _ = redirect(&model(&[n]), "ai.moed", |c| {
        *seen.lock().unwrap() = Some(*c);
        false
    });
    let Some(Candidate::Gqa(g)) = seen.into_inner().unwrap() else {
        panic!("not read as GroupQueryAttention");
    };
    assert!(g.extra_inputs && g.unknown_attributes);
    assert_eq!(g.softcap, 30.0);
}
