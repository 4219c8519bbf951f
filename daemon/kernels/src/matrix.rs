//! `QMatrix`: a borrowed view of one `MatMulNBits` weight, its lengths checked once.

use crate::{KernelError, check_block, checked_len};

/// A weight W [n, k] in `MatMulNBits` layout: codes [n, k_blocks, block*bits/8], scales
/// [n, k_blocks], zero points [n, ceil(k_blocks*bits/8)] packed like the codes (absent: 2^(bits-1)).
#[derive(Clone, Copy, Debug)]
pub struct QMatrix<'a> {
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) bits: u32,
    pub(crate) block: usize,
    pub(crate) k_blocks: usize,
    /// Code bytes of one row.
    pub(crate) row_bytes: usize,
    pub(crate) zp_row_bytes: usize,
    pub(crate) codes: &'a [u8],
    pub(crate) scales: &'a [f32],
    pub(crate) zero_points: Option<&'a [u8]>,
}

impl<'a> QMatrix<'a> {
    /// Checks every length against n, k, bits and block.
    pub fn new(
        n: usize,
        k: usize,
        bits: u32,
        block: usize,
        codes: &'a [u8],
        scales: &'a [f32],
        zero_points: Option<&'a [u8]>,
    ) -> Result<Self, KernelError> {
        if bits != 4 && bits != 8 {
            return Err(KernelError::Bits(bits));
        }
        check_block(block)?;
        let k_blocks = k.div_ceil(block);
        let block_bytes = block * bits as usize / 8;
        let row_bytes = checked_len("codes", &[k_blocks, block_bytes])?;
        let zp_row_bytes = checked_len("zero_points", &[k_blocks, bits as usize])?.div_ceil(8);
        expect_len("codes", checked_len("codes", &[n, row_bytes])?, codes.len())?;
        expect_len(
            "scales",
            checked_len("scales", &[n, k_blocks])?,
            scales.len(),
        )?;
        if let Some(z) = zero_points {
            expect_len(
                "zero_points",
                checked_len("zero_points", &[n, zp_row_bytes])?,
                z.len(),
            )?;
        }
        Ok(Self {
            n,
            k,
            bits,
            block,
            k_blocks,
            row_bytes,
            zp_row_bytes,
            codes,
            scales,
            zero_points,
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

    /// The zero point of block `b` of row `row`.
    pub(crate) fn zero_point(&self, row: usize, b: usize) -> u8 {
        match self.zero_points {
            Some(z) => unpack(&z[row * self.zp_row_bytes..], b, self.bits),
            None => 1 << (self.bits - 1),
        }
    }

    /// The code of element `i` (0 ≤ i < k_blocks*block) of row `row`.
    pub(crate) fn code(&self, row: usize, i: usize) -> u8 {
        unpack(&self.codes[row * self.row_bytes..], i, self.bits)
    }
}

/// Value `i` of bytes packed at `bits` per value (4 bits: even values in the low nibbles).
fn unpack(bytes: &[u8], i: usize, bits: u32) -> u8 {
    if bits == 8 {
        bytes[i]
    } else {
        (bytes[i / 2] >> (4 * (i % 2))) & 0x0f
    }
}

pub(crate) fn expect_len(
    what: &'static str,
    expected: usize,
    got: usize,
) -> Result<(), KernelError> {
    if expected == got {
        Ok(())
    } else {
        Err(KernelError::Length {
            what,
            expected,
            got,
        })
    }
}
