//! Moves chosen `com.microsoft.MatMulNBits` and `com.microsoft.GroupQueryAttention` nodes of a
//! serialized ONNX model into moed's operator domain, by walking the protobuf wire format: only the
//! model, its main graph and the nodes are re-encoded; every other field (initializers,
//! external-data references, metadata) is copied byte for byte.

/// The attributes of a MatMulNBits node that decide whether moed's kernel can run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct NbitsNode {
    pub k: i64,
    pub n: i64,
    pub bits: i64,
    pub block_size: i64,
    pub accuracy_level: i64,
    /// Inputs named (A, B, scales and possibly zero points, g_idx, bias): empty names count.
    pub inputs: usize,
    /// Whether the fourth input (zero points) is named.
    pub zero_points: bool,
    /// Whether any input after the zero points is named.
    pub extra_inputs: bool,
}

/// The attributes and inputs of a GroupQueryAttention node that decide whether moed's attention
/// kernel can run it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GqaNode {
    pub num_heads: i64,
    pub kv_num_heads: i64,
    /// 0 when absent (ONNX Runtime then uses 1/sqrt(head size)).
    pub scale: f32,
    pub softcap: f32,
    pub local_window_size: i64,
    pub do_rotary: i64,
    pub smooth_softmax: i64,
    pub qk_output: i64,
    /// Which of the first seven inputs (query, key, value, past key and value, seqlens_k,
    /// total_sequence_length) are named.
    pub core_inputs: [bool; 7],
    /// Whether any later input (rotary caches, position ids, attention bias, sinks) is named.
    pub extra_inputs: bool,
    /// Outputs named (output, present key and value, and possibly the scores).
    pub outputs: usize,
    /// Whether an attribute moed does not know, or a non-default rotary_interleaved, is set.
    pub unknown_attributes: bool,
    /// Whether a node or the graph's outputs read the present key or value.
    pub presents_used: bool,
}

impl Default for GqaNode {
    fn default() -> Self {
        GqaNode {
            num_heads: 0,
            kv_num_heads: 0,
            scale: 0.0,
            softcap: 0.0,
            local_window_size: -1,
            do_rotary: 0,
            smooth_softmax: 0,
            qk_output: 0,
            core_inputs: [false; 7],
            extra_inputs: false,
            outputs: 0,
            unknown_attributes: false,
            presents_used: false,
        }
    }
}

/// A node moed has a kernel for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Candidate {
    Nbits(NbitsNode),
    Gqa(GqaNode),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum EditError {
    #[error("the model is not valid protobuf: {0}")]
    Malformed(&'static str),
}

const MS_DOMAIN: &[u8] = b"com.microsoft";
const NBITS: &[u8] = b"MatMulNBits";
const GQA: &[u8] = b"GroupQueryAttention";

// Field numbers of onnx.proto3.
const MODEL_GRAPH: u32 = 7;
const MODEL_OPSET_IMPORT: u32 = 8;
const GRAPH_NODE: u32 = 1;
const GRAPH_OUTPUT: u32 = 12;
const VALUE_INFO_NAME: u32 = 1;
const NODE_INPUT: u32 = 1;
const NODE_OUTPUT: u32 = 2;
const NODE_OP_TYPE: u32 = 4;
const NODE_ATTRIBUTE: u32 = 5;
const NODE_DOMAIN: u32 = 7;
const ATTR_NAME: u32 = 1;
const ATTR_F: u32 = 2;
const ATTR_I: u32 = 3;
const OPSET_DOMAIN: u32 = 1;
const OPSET_VERSION: u32 = 2;

const LEN: u8 = 2;
const FIXED32: u8 = 5;

/// `model` with every candidate node that `accept` takes moved into `domain` (version 1 added to
/// the model's opset imports), and how many were moved; `None` when none was.
pub(crate) fn redirect(
    model: &[u8],
    domain: &str,
    accept: impl Fn(&Candidate) -> bool,
) -> Result<Option<(Vec<u8>, usize)>, EditError> {
    let mut moved = 0;
    let mut out = Vec::with_capacity(model.len() + 32);
    for field in Fields::new(model) {
        let field = field?;
        if field.number == MODEL_GRAPH && field.wire == LEN {
            let graph = edit_graph(field.payload, domain, &accept, &mut moved)?;
            put_len_field(&mut out, MODEL_GRAPH, &graph);
        } else {
            out.extend_from_slice(field.raw);
        }
    }
    if moved == 0 {
        return Ok(None);
    }
    let mut opset = Vec::new();
    put_len_field(&mut opset, OPSET_DOMAIN, domain.as_bytes());
    put_varint(&mut opset, u64::from(OPSET_VERSION << 3));
    put_varint(&mut opset, 1);
    put_len_field(&mut out, MODEL_OPSET_IMPORT, &opset);
    Ok(Some((out, moved)))
}

fn edit_graph(
    graph: &[u8],
    domain: &str,
    accept: &impl Fn(&Candidate) -> bool,
    moved: &mut usize,
) -> Result<Vec<u8>, EditError> {
    let used = consumed_names(graph)?;
    let mut out = Vec::with_capacity(graph.len() + 64);
    for field in Fields::new(graph) {
        let field = field?;
        if field.number == GRAPH_NODE && field.wire == LEN {
            let mut node = read_node(field.payload)?;
            if let Some(Candidate::Gqa(g)) = &mut node {
                g.presents_used = output_names(field.payload)?
                    .iter()
                    .skip(1)
                    .any(|n| !n.is_empty() && used.contains(n));
            }
            if let Some(node) = node.filter(|n| accept(n)) {
                let mut edited = Vec::with_capacity(field.payload.len() + domain.len());
                let mut output = 0;
                for nf in Fields::new(field.payload) {
                    let nf = nf?;
                    if nf.number == NODE_OUTPUT && matches!(node, Candidate::Gqa(_)) {
                        // Nothing reads the present outputs; moed's operator does not write them.
                        let name = if output == 0 { nf.payload } else { &[][..] };
                        put_len_field(&mut edited, NODE_OUTPUT, name);
                        output += 1;
                    } else if nf.number != NODE_DOMAIN {
                        edited.extend_from_slice(nf.raw);
                    }
                }
                put_len_field(&mut edited, NODE_DOMAIN, domain.as_bytes());
                put_len_field(&mut out, GRAPH_NODE, &edited);
                *moved += 1;
                continue;
            }
        }
        out.extend_from_slice(field.raw);
    }
    Ok(out)
}

/// Every value name the graph's nodes read or the graph outputs.
fn consumed_names(graph: &[u8]) -> Result<std::collections::HashSet<&[u8]>, EditError> {
    let mut used = std::collections::HashSet::new();
    for field in Fields::new(graph) {
        let field = field?;
        match (field.number, field.wire) {
            (GRAPH_NODE, LEN) => {
                for nf in Fields::new(field.payload) {
                    let nf = nf?;
                    if nf.number == NODE_INPUT && nf.wire == LEN {
                        used.insert(nf.payload);
                    }
                }
            }
            (GRAPH_OUTPUT, LEN) => {
                for vf in Fields::new(field.payload) {
                    let vf = vf?;
                    if vf.number == VALUE_INFO_NAME && vf.wire == LEN {
                        used.insert(vf.payload);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(used)
}

fn output_names(node: &[u8]) -> Result<Vec<&[u8]>, EditError> {
    let mut names = Vec::new();
    for field in Fields::new(node) {
        let field = field?;
        if field.number == NODE_OUTPUT && field.wire == LEN {
            names.push(field.payload);
        }
    }
    Ok(names)
}

/// The node as a candidate, or `None` for any other node.
fn read_node(node: &[u8]) -> Result<Option<Candidate>, EditError> {
    let (mut op_type, mut domain) = (&[][..], &[][..]);
    let mut attrs: Vec<(&[u8], Attr)> = Vec::new();
    let mut input_names: Vec<bool> = Vec::new();
    let mut outputs = 0;
    for field in Fields::new(node) {
        let field = field?;
        match (field.number, field.wire) {
            (NODE_OP_TYPE, LEN) => op_type = field.payload,
            (NODE_DOMAIN, LEN) => domain = field.payload,
            (NODE_INPUT, LEN) => input_names.push(!field.payload.is_empty()),
            (NODE_OUTPUT, LEN) => outputs += usize::from(!field.payload.is_empty()),
            (NODE_ATTRIBUTE, LEN) => {
                if let Some(attr) = read_attribute(field.payload)? {
                    attrs.push(attr);
                }
            }
            _ => {}
        }
    }
    if domain != MS_DOMAIN {
        return Ok(None);
    }
    let named = |i: usize| input_names.get(i).copied().unwrap_or(false);
    if op_type == NBITS {
        let mut info = NbitsNode::default();
        for (name, value) in &attrs {
            let Attr::Int(v) = *value else { continue };
            match *name {
                b"K" => info.k = v,
                b"N" => info.n = v,
                b"bits" => info.bits = v,
                b"block_size" => info.block_size = v,
                b"accuracy_level" => info.accuracy_level = v,
                _ => {}
            }
        }
        info.inputs = input_names.len();
        info.zero_points = named(3);
        info.extra_inputs = input_names.iter().skip(4).any(|&n| n);
        return Ok(Some(Candidate::Nbits(info)));
    }
    if op_type == GQA {
        let mut info = GqaNode::default();
        for (name, value) in &attrs {
            match (*name, *value) {
                (b"num_heads", Attr::Int(v)) => info.num_heads = v,
                (b"kv_num_heads", Attr::Int(v)) => info.kv_num_heads = v,
                (b"local_window_size", Attr::Int(v)) => info.local_window_size = v,
                (b"do_rotary", Attr::Int(v)) => info.do_rotary = v,
                (b"smooth_softmax", Attr::Int(v)) => info.smooth_softmax = v,
                (b"qk_output", Attr::Int(v)) => info.qk_output = v,
                (b"scale", Attr::Float(v)) => info.scale = v,
                (b"softcap", Attr::Float(v)) => info.softcap = v,
                (b"rotary_interleaved", Attr::Int(0)) => {}
                // Any other attribute (one a later ONNX Runtime adds) may change the meaning.
                _ => info.unknown_attributes = true,
            }
        }
        for (i, slot) in info.core_inputs.iter_mut().enumerate() {
            *slot = named(i);
        }
        info.extra_inputs = input_names.iter().skip(7).any(|&n| n);
        info.outputs = outputs;
        return Ok(Some(Candidate::Gqa(info)));
    }
    Ok(None)
}

#[derive(Debug, Clone, Copy)]
enum Attr {
    Int(i64),
    Float(f32),
}

/// An integer or float attribute's name and value; `None` for other kinds.
fn read_attribute(attr: &[u8]) -> Result<Option<(&[u8], Attr)>, EditError> {
    let (mut name, mut value) = (&[][..], None);
    for field in Fields::new(attr) {
        let field = field?;
        match (field.number, field.wire) {
            (ATTR_NAME, LEN) => name = field.payload,
            (ATTR_I, 0) => value = Some(Attr::Int(field.varint as i64)),
            (ATTR_F, FIXED32) => value = Some(Attr::Float(f32::from_bits(field.varint as u32))),
            _ => {}
        }
    }
    Ok(value.map(|v| (name, v)))
}

/// One field of a message: its number, wire type, the whole encoded field (`raw`, for copying)
/// and its payload (the bytes of a length-delimited field) or varint (or fixed32) value.
struct Field<'a> {
    number: u32,
    wire: u8,
    raw: &'a [u8],
    payload: &'a [u8],
    varint: u64,
}

struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields { buf, pos: 0 }
    }

    fn next_field(&mut self) -> Result<Field<'a>, EditError> {
        let start = self.pos;
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| EditError::Malformed("field number"))?;
        let wire = (key & 7) as u8;
        let (mut payload, mut varint) = (&[][..], 0);
        match wire {
            0 => varint = self.varint()?,
            1 => self.skip(8)?,
            FIXED32 => {
                let at = self.pos;
                self.skip(4)?;
                let mut word = [0u8; 4];
                word.copy_from_slice(&self.buf[at..self.pos]);
                varint = u64::from(u32::from_le_bytes(word));
            }
            LEN => {
                let len = usize::try_from(self.varint()?)
                    .map_err(|_| EditError::Malformed("field length"))?;
                let at = self.pos;
                self.skip(len)?;
                payload = &self.buf[at..self.pos];
            }
            _ => return Err(EditError::Malformed("unsupported wire type")),
        }
        Ok(Field {
            number,
            wire,
            raw: &self.buf[start..self.pos],
            payload,
            varint,
        })
    }

    fn varint(&mut self) -> Result<u64, EditError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self
                .buf
                .get(self.pos)
                .ok_or(EditError::Malformed("truncated varint"))?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(EditError::Malformed("varint longer than 10 bytes"))
    }

    fn skip(&mut self, len: usize) -> Result<(), EditError> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.buf.len())
            .ok_or(EditError::Malformed("field runs past the end"))?;
        self.pos = end;
        Ok(())
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>, EditError>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let field = self.next_field();
        if field.is_err() {
            // One error ends the walk: the position after a malformed field means nothing.
            self.pos = self.buf.len();
        }
        Some(field)
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_len_field(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    put_varint(out, u64::from(number << 3 | u32::from(LEN)));
    put_varint(out, payload.len() as u64);
    out.extend_from_slice(payload);
}

#[cfg(test)]
#[path = "onnx_edit_tests.rs"]
mod tests;
