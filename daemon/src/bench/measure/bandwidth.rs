//! Memory read bandwidth as the engine can get it: several threads summing a buffer far larger
//! than the caches, sequentially, each its own contiguous part.

use std::time::Instant;

/// Floats summed per step: 16 independent accumulators let the compiler vectorize the loop.
const LANES: usize = 16;

fn sum(chunk: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut it = chunk.chunks_exact(LANES);
    for block in &mut it {
        for (a, &x) in acc.iter_mut().zip(block) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + it.remainder().iter().sum::<f32>()
}

/// A buffer far larger than the caches, allocated and touched once, read many times.
pub struct BandwidthProbe {
    buf: Vec<f32>,
}

impl BandwidthProbe {
    pub fn new(bytes: usize) -> BandwidthProbe {
        let n = (bytes / 4).max(LANES * 64);
        // Written once so every page is really backed before timing.
        BandwidthProbe {
            buf: (0..n).map(|i| (i & 7) as f32).collect(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.buf.len() * 4
    }

    /// Best of `passes` timed passes with `threads` threads, in bytes/s.
    pub fn measure(&self, threads: usize, passes: usize) -> f64 {
        let threads = threads.max(1);
        let part = self.buf.len().div_ceil(threads);
        let mut best = 0.0f64;
        let mut sink = 0.0f32;
        for _ in 0..passes.max(1) {
            let start = Instant::now();
            let total: f32 = std::thread::scope(|s| {
                let handles: Vec<_> = self
                    .buf
                    .chunks(part)
                    .map(|c| s.spawn(move || sum(c)))
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
            });
            let secs = start.elapsed().as_secs_f64();
            sink += total;
            if secs > 0.0 {
                best = best.max(self.bytes() as f64 / secs);
            }
        }
        // Keeps the sums observable so the reads cannot be optimized away.
        std::hint::black_box(sink);
        best
    }
}

/// One-shot form of [`BandwidthProbe`].
pub fn read_bandwidth(bytes: usize, threads: usize, passes: usize) -> f64 {
    BandwidthProbe::new(bytes).measure(threads, passes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sum_counts_every_element() {
        let v: Vec<f32> = (0..1000).map(|i| (i % 3) as f32).collect();
        assert_eq!(sum(&v), v.iter().sum::<f32>());
    }

    #[test]
    fn bandwidth_is_positive() {
        assert!(read_bandwidth(1 << 20, 2, 2) > 0.0);
    }
}
