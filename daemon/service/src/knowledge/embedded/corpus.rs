//! Deterministic test text: a seeded generator, a 40,000-word language and Zipf-like draws from
//! it, shared by the memory measurement and the ranking comparison.

/// A seeded pseudo-random generator (no dependency needed for test data).
pub fn rng(seed: u64) -> impl FnMut() -> u32 {
    let mut s = seed;
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 33) as u32
    }
}

/// `count` words of 3 to 10 letters.
pub fn words(count: usize, seed: u64) -> Vec<String> {
    let mut next = rng(seed);
    (0..count)
        .map(|_| {
            let len = 3 + next() % 8;
            (0..len)
                .map(|_| (b'a' + (next() % 26) as u8) as char)
                .collect()
        })
        .collect()
}

/// The language of every document: 40,000 words.
pub fn vocabulary() -> Vec<String> {
    words(40_000, 7)
}

/// A rank in `0..n` with probability ~ 1/(rank + 1): exp of a uniform draw over ln(n).
pub fn zipf(next: &mut impl FnMut() -> u32, n: usize) -> usize {
    let u = (next() as f64) / (u32::MAX as f64);
    ((n as f64).powf(u) as usize).clamp(1, n) - 1
}

/// `bytes` of text in words drawn from `vocab` with a Zipf-like skew.
pub fn text(vocab: &[String], bytes: usize, seed: u64) -> String {
    let mut next = rng(seed);
    let mut out = String::with_capacity(bytes + 16);
    while out.len() < bytes {
        out.push_str(&vocab[zipf(&mut next, vocab.len())]);
        out.push(if next().is_multiple_of(12) { '\n' } else { ' ' });
    }
    out
}
