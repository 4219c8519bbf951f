//! Moves chosen `com.microsoft.MatMulNBits` nodes of a serialized ONNX model into moed's operator
//! domain, by walking the protobuf wire format: only the model, its main graph and the nodes are
//! re-encoded; every other field (initializers, external-data references, metadata) is copied
//! byte for byte.

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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum EditError {
    #[error("the model is not valid protobuf: {0}")]
    Malformed(&'static str),
}

const MS_DOMAIN: &[u8] = b"com.microsoft";
const OP_TYPE: &[u8] = b"MatMulNBits";

// Field numbers of onnx.proto3.
const MODEL_GRAPH: u32 = 7;
const MODEL_OPSET_IMPORT: u32 = 8;
const GRAPH_NODE: u32 = 1;
const NODE_INPUT: u32 = 1;
const NODE_OP_TYPE: u32 = 4;
const NODE_ATTRIBUTE: u32 = 5;
const NODE_DOMAIN: u32 = 7;
const ATTR_NAME: u32 = 1;
const ATTR_I: u32 = 3;
const OPSET_DOMAIN: u32 = 1;
const OPSET_VERSION: u32 = 2;

const LEN: u8 = 2;

/// `model` with every MatMulNBits node that `accept` takes moved into `domain` (version 1 added to
/// the model's opset imports), and how many were moved; `None` when none was.
pub(crate) fn redirect_nbits(
    model: &[u8],
    domain: &str,
    accept: impl Fn(&NbitsNode) -> bool,
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
    accept: &impl Fn(&NbitsNode) -> bool,
    moved: &mut usize,
) -> Result<Vec<u8>, EditError> {
    let mut out = Vec::with_capacity(graph.len() + 64);
    for field in Fields::new(graph) {
        let field = field?;
        if field.number == GRAPH_NODE && field.wire == LEN {
            match read_node(field.payload)? {
                Some(node) if accept(&node) => {
                    let mut edited = Vec::with_capacity(field.payload.len() + domain.len());
                    for nf in Fields::new(field.payload) {
                        let nf = nf?;
                        if nf.number != NODE_DOMAIN {
                            edited.extend_from_slice(nf.raw);
                        }
                    }
                    put_len_field(&mut edited, NODE_DOMAIN, domain.as_bytes());
                    put_len_field(&mut out, GRAPH_NODE, &edited);
                    *moved += 1;
                    continue;
                }
                _ => {}
            }
        }
        out.extend_from_slice(field.raw);
    }
    Ok(out)
}

/// The node's MatMulNBits attributes, or `None` for any other node.
fn read_node(node: &[u8]) -> Result<Option<NbitsNode>, EditError> {
    let (mut op_type, mut domain) = (&[][..], &[][..]);
    let mut info = NbitsNode::default();
    let mut input_names: Vec<bool> = Vec::new();
    for field in Fields::new(node) {
        let field = field?;
        match (field.number, field.wire) {
            (NODE_OP_TYPE, LEN) => op_type = field.payload,
            (NODE_DOMAIN, LEN) => domain = field.payload,
            (NODE_INPUT, LEN) => input_names.push(!field.payload.is_empty()),
            (NODE_ATTRIBUTE, LEN) => read_int_attribute(field.payload, &mut info)?,
            _ => {}
        }
    }
    if op_type != OP_TYPE || domain != MS_DOMAIN {
        return Ok(None);
    }
    info.inputs = input_names.len();
    info.zero_points = input_names.get(3).copied().unwrap_or(false);
    info.extra_inputs = input_names.iter().skip(4).any(|&named| named);
    Ok(Some(info))
}

fn read_int_attribute(attr: &[u8], info: &mut NbitsNode) -> Result<(), EditError> {
    let (mut name, mut value) = (&[][..], None);
    for field in Fields::new(attr) {
        let field = field?;
        match (field.number, field.wire) {
            (ATTR_NAME, LEN) => name = field.payload,
            (ATTR_I, 0) => value = Some(field.varint as i64),
            _ => {}
        }
    }
    let Some(v) = value else { return Ok(()) };
    match name {
        b"K" => info.k = v,
        b"N" => info.n = v,
        b"bits" => info.bits = v,
        b"block_size" => info.block_size = v,
        b"accuracy_level" => info.accuracy_level = v,
        _ => {}
    }
    Ok(())
}

/// One field of a message: its number, wire type, the whole encoded field (`raw`, for copying)
/// and its payload (the bytes of a length-delimited field) or varint value.
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
            5 => self.skip(4)?,
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
