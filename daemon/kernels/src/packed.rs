//! `PackedMatrix`: a `QMatrix` repacked 16 rows abreast, block by block, so a matrix-vector
//! product reads one sequential stream and each 32-bit lane of a register is one row's output.
//!
//! Why: in `MatMulNBits` layout a kernel reads several rows (and their scales) side by side, which
//! is several memory streams, and it needs a horizontal sum per row at the end. Measured on one
//! core (AVX-512 VNNI, the kernel bench's cold cases), that layout reaches 9–14 GB/s where one
//! sequential stream reads at 20–24 GB/s. The 16-row layout is how llama.cpp repacks Q4_0 too.
//!
//! Layout: rows in groups of 16 (the last group padded with zero rows); a group is `k_blocks`
//! records, one per block, each: the codes (`block_bytes / 4` chunks of 64 bytes; chunk c holds
//! 4 bytes per row, row r at bytes 4r..4r+4), then the 16 rows' scales (16 × f32), then, when the
//! weights have zero points, the 16 rows' zero points (16 × u8). At 8 bits, chunk c byte i of a
//! row is the code of element 4c+i of the block; at 4 bits, its low nibble is element 8c+i and its
//! high nibble element 8c+4+i, so both halves pair with 4 consecutive int8 activations.

use std::sync::Mutex;

use crate::driver::{
    Parallel, TOKENS_PER_TASK, as_atomics, check_call, task_ranges, units_per_task,
};
use crate::input::{QuantizedInput, TILE_TOKENS};
use crate::matrix::QMatrix;
use crate::{KernelError, checked_len};

/// Rows side by side in a group: one per 32-bit lane of a 512-bit register.
pub const PACK_ROWS: usize = 16;
/// Bytes of one chunk of codes: 4 per row.
const CHUNK: usize = 4 * PACK_ROWS;
/// Bytes of the 16 scales of a record.
const SCALES: usize = 4 * PACK_ROWS;

/// A weight W [n, k] in the 16-row layout (see the module's documentation), owned.
#[derive(Clone, Debug)]
pub struct PackedMatrix {
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) bits: u32,
    pub(crate) block: usize,
    pub(crate) k_blocks: usize,
    pub(crate) zero_points: bool,
    /// Bytes of one block's codes for one row.
    pub(crate) block_bytes: usize,
    /// Bytes of one record (one block of one group).
    pub(crate) record: usize,
    pub(crate) data: Vec<u8>,
}

impl PackedMatrix {
    /// Repacks w, its groups spread over `par`'s threads.
    pub fn pack(w: &QMatrix, par: &dyn Parallel) -> Result<Self, KernelError> {
        let block_bytes = w.block * w.bits as usize / 8;
        let zp = usize::from(w.zero_points.is_some()) * PACK_ROWS;
        let record = checked_len("packed weights", &[PACK_ROWS, block_bytes])?
            .checked_add(SCALES + zp)
            .ok_or(KernelError::TooLarge {
                what: "packed weights",
            })?;
        let groups = w.n.div_ceil(PACK_ROWS);
        let group_bytes = checked_len("packed weights", &[w.k_blocks, record])?;
        let total = checked_len("packed weights", &[groups, group_bytes])?;
        let mut data = vec![0u8; total];
        if total > 0 {
            // Disjoint groups of slots, one lock each, so any thread may fill any of them.
            let per_task = groups
                .div_ceil(par.threads().max(1).saturating_mul(4))
                .max(1);
            let slots: Vec<Mutex<&mut [u8]>> = data
                .chunks_mut(per_task * group_bytes)
                .map(Mutex::new)
                .collect();
            par.run(slots.len(), &|task| {
                let Some(slot) = slots.get(task) else { return };
                let mut out = slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                for (i, group) in out.chunks_mut(group_bytes).enumerate() {
                    fill_group(w, (task * per_task + i) * PACK_ROWS, record, group);
                }
            });
        }
        Ok(Self {
            n: w.n,
            k: w.k,
            bits: w.bits,
            block: w.block,
            k_blocks: w.k_blocks,
            zero_points: w.zero_points.is_some(),
            block_bytes,
            record,
            data,
        })
    }

    /// Output features (rows of W).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (columns of W).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes the packed weights occupy.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    pub(crate) fn groups(&self) -> usize {
        self.n.div_ceil(PACK_ROWS)
    }

    pub(crate) fn group_bytes(&self) -> usize {
        self.k_blocks * self.record
    }

    /// The record of block b of group g.
    pub(crate) fn record_of(&self, g: usize, b: usize) -> &[u8] {
        let start = g * self.group_bytes() + b * self.record;
        &self.data[start..start + self.record]
    }
}

/// Writes the records of the group whose first row is `row0` (rows past n stay zero).
fn fill_group(w: &QMatrix, row0: usize, record: usize, out: &mut [u8]) {
    let block_bytes = w.block * w.bits as usize / 8;
    let codes_len = PACK_ROWS * block_bytes;
    for (b, rec) in out.chunks_mut(record).enumerate().take(w.k_blocks) {
        for r in 0..PACK_ROWS.min(w.n.saturating_sub(row0)) {
            let row = row0 + r;
            let src = &w.codes[row * w.row_bytes + b * block_bytes..][..block_bytes];
            for c in 0..block_bytes / 4 {
                let dst = &mut rec[c * CHUNK + 4 * r..][..4];
                if w.bits == 8 {
                    dst.copy_from_slice(&src[4 * c..4 * c + 4]);
                } else {
                    let value = |e: usize| (src[e / 2] >> (4 * (e % 2))) & 0x0f;
                    for (i, d) in dst.iter_mut().enumerate() {
                        *d = value(8 * c + i) | (value(8 * c + 4 + i) << 4);
                    }
                }
            }
            let s = w.scales[row * w.k_blocks + b].to_le_bytes();
            rec[codes_len + 4 * r..][..4].copy_from_slice(&s);
            if w.zero_points.is_some() {
                rec[codes_len + SCALES + r] = w.zero_point(row, b);
            }
        }
    }
}

/// y [m, n] = x · Wᵀ from packed weights: the AVX-512 VNNI kernel where this CPU has it, the
/// scalar reference elsewhere. y.len() must be m*n.
pub fn matmul_packed(
    w: &PackedMatrix,
    x: &QuantizedInput,
    y: &mut [f32],
    par: &dyn Parallel,
) -> Result<(), KernelError> {
    matmul_packed_on(packed_kernel_available(), w, x, y, par)
}

/// Whether packing pays on this CPU: it has the kernel that reads the packed layout.
pub fn packed_kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return crate::best_path() == crate::Path::Avx512Vnni;
    #[cfg(not(target_arch = "x86_64"))]
    false
}

pub(crate) fn matmul_packed_on(
    fast: bool,
    w: &PackedMatrix,
    x: &QuantizedInput,
    y: &mut [f32],
    par: &dyn Parallel,
) -> Result<(), KernelError> {
    check_call(x, w.k, w.block, w.n, y.len())?;
    if y.is_empty() {
        return Ok(());
    }
    let groups = w.groups();
    let per_task = units_per_task(groups, w.group_bytes(), par.threads());
    let row_tasks = groups.div_ceil(per_task);
    let tok_tasks = x.m.div_ceil(TOKENS_PER_TASK);
    let out = as_atomics(y);
    let task = |id: usize| {
        let (gs, toks) = task_ranges(id, tok_tasks, per_task, groups, x.m);
        for g in gs {
            for tok0 in toks.clone().step_by(TILE_TOKENS) {
                let nt = TILE_TOKENS.min(toks.end - tok0);
                let tile = if fast {
                    group_fast(w, x, g, tok0, nt)
                } else {
                    group_scalar(w, x, g, tok0, nt)
                };
                for (t, rows) in tile.iter().enumerate().take(nt) {
                    for (r, v) in rows.iter().enumerate() {
                        let row = g * PACK_ROWS + r;
                        if row < w.n
                            && let Some(o) = out.get((tok0 + t) * w.n + row)
                        {
                            o.store(v.to_bits(), std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }
            }
        }
    };
    let tasks = row_tasks * tok_tasks;
    par.run(tasks, &|id| {
        if id < tasks {
            task(id)
        }
    });
    Ok(())
}

/// y of one group (16 rows) for tokens tok0..tok0+nt, [token][row].
pub(crate) type GroupOut = [[f32; PACK_ROWS]; TILE_TOKENS];

#[cfg(target_arch = "x86_64")]
fn group_fast(w: &PackedMatrix, x: &QuantizedInput, g: usize, tok0: usize, nt: usize) -> GroupOut {
    crate::packed_avx512::group(w, x, g, tok0, nt)
}

#[cfg(not(target_arch = "x86_64"))]
fn group_fast(w: &PackedMatrix, x: &QuantizedInput, g: usize, tok0: usize, nt: usize) -> GroupOut {
    group_scalar(w, x, g, tok0, nt)
}

/// The reference for the packed layout: `scalar::dot`'s formula, read from the records.
pub(crate) fn group_scalar(
    w: &PackedMatrix,
    x: &QuantizedInput,
    g: usize,
    tok0: usize,
    nt: usize,
) -> GroupOut {
    let mut out = GroupOut::default();
    let codes_len = PACK_ROWS * w.block_bytes;
    for (j, out_t) in out.iter_mut().enumerate().take(nt) {
        let t = tok0 + j;
        let q = x.q(t);
        for (r, o) in out_t.iter_mut().enumerate() {
            let (mut main, mut corr) = (0f32, 0f32);
            for b in 0..w.k_blocks {
                let rec = w.record_of(g, b);
                let qb = &q[b * w.block..(b + 1) * w.block];
                let mut isum = 0i32;
                for c in 0..w.block_bytes / 4 {
                    let bytes = &rec[c * CHUNK + 4 * r..][..4];
                    for (i, &byte) in bytes.iter().enumerate() {
                        if w.bits == 8 {
                            isum += i32::from(byte) * i32::from(qb[4 * c + i]);
                        } else {
                            isum += i32::from(byte & 0x0f) * i32::from(qb[8 * c + i]);
                            isum += i32::from(byte >> 4) * i32::from(qb[8 * c + 4 + i]);
                        }
                    }
                }
                let mut s = [0u8; 4];
                s.copy_from_slice(&rec[codes_len + 4 * r..][..4]);
                let sw = f32::from_le_bytes(s);
                let z = if w.zero_points {
                    rec[codes_len + SCALES + r]
                } else {
                    1 << (w.bits - 1)
                };
                main += sw * x.scale[t * x.row_blocks + b] * isum as f32;
                corr += sw * f32::from(z) * x.scaled_sum[t * x.row_blocks + b];
            }
            *o = main - corr;
        }
    }
    out
}
