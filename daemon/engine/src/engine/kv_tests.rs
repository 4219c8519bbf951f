//! Tests of the KV cache buffers: the head-major layout the graphs read, growth, truncation.

use moed_kernels::f16;

use super::{KvCache, PastData};
use crate::engine::CacheIo;
use crate::package::{CacheDtype, CacheLayout};

/// `past_<name>`'s shape and data, widened to f32 whatever the cache holds.
fn past(kv: &KvCache, layer: usize, i: usize, io: &CacheIo, past: usize) -> (Vec<i64>, Vec<f32>) {
    let (shape, data) = kv.past(layer, i, io, past);
    let data = match data {
        PastData::F32(d) => d.to_vec(),
        PastData::F16(d) => d.iter().map(|v| v.to_f32()).collect(),
    };
    (shape, data)
}

fn io(shape: &[i64]) -> CacheIo {
    CacheIo {
        shape: shape.to_vec(),
        per_token: shape.iter().product::<i64>() as usize,
    }
}

/// `t` token-major rows `[t, heads, row]` whose values encode (token, head, element).
fn rows(first_token: usize, t: usize, heads: usize, row: usize) -> Vec<f32> {
    let mut v = Vec::new();
    for tok in first_token..first_token + t {
        for h in 0..heads {
            for e in 0..row {
                v.push((tok * 100 + h * 10 + e) as f32 + 1.0);
            }
        }
    }
    v
}

/// Appends `t` tokens after `past` as a forward pass does.
fn step(kv: &mut KvCache, ios: &[CacheIo], past: usize, t: usize) {
    kv.reserve(past + t, past);
    for (i, c) in ios.iter().enumerate() {
        let heads = c.shape[0] as usize;
        kv.append(0, i, &rows(past, t, heads, c.per_token / heads), past, t);
    }
}

#[test]
fn head_major_rows_are_per_head_in_token_order_with_spare_capacity() {
    let ios = [io(&[2, 3])];
    let mut kv = KvCache::new(CacheLayout::HeadMajor, CacheDtype::Float32, 1, &ios, 4096);
    step(&mut kv, &ios, 0, 5);
    step(&mut kv, &ios, 5, 1);
    let (shape, data) = past(&kv, 0, 0, &ios[0], 6);
    let cap = shape[1] as usize;
    assert_eq!(shape, vec![2, cap as i64, 3]);
    assert!(cap >= 6, "capacity {cap}");
    assert_eq!(data.len(), 2 * cap * 3);
    let want = rows(0, 6, 2, 3);
    for tok in 0..6 {
        for h in 0..2 {
            assert_eq!(
                &data[(h * cap + tok) * 3..][..3],
                &want[(tok * 2 + h) * 3..][..3],
                "token {tok} head {h}"
            );
        }
    }
    // Spare rows are zero (finite) until written.
    assert!(data[6 * 3..cap * 3].iter().all(|&x| x == 0.0));
}

#[test]
fn growing_past_the_capacity_keeps_the_rows() {
    let ios = [io(&[2, 3]), io(&[1, 4])];
    let mut kv = KvCache::new(CacheLayout::HeadMajor, CacheDtype::Float32, 1, &ios, 4096);
    step(&mut kv, &ios, 0, 250);
    let (before, _) = past(&kv, 0, 0, &ios[0], 250);
    step(&mut kv, &ios, 250, 20);
    let (after, data) = past(&kv, 0, 0, &ios[0], 270);
    assert!(after[1] > before[1], "{before:?} -> {after:?}");
    let cap = after[1] as usize;
    let want = rows(0, 270, 2, 3);
    for tok in [0, 1, 249, 250, 269] {
        for h in 0..2 {
            assert_eq!(
                &data[(h * cap + tok) * 3..][..3],
                &want[(tok * 2 + h) * 3..][..3]
            );
        }
    }
    let (shape, data) = past(&kv, 0, 1, &ios[1], 270);
    assert_eq!(shape, vec![1, cap as i64, 4]);
    assert_eq!(&data[269 * 4..270 * 4], &rows(269, 1, 1, 4)[..]);
}

#[test]
fn capacity_never_exceeds_the_context_length() {
    let ios = [io(&[2, 3])];
    let mut kv = KvCache::new(CacheLayout::HeadMajor, CacheDtype::Float32, 1, &ios, 300);
    step(&mut kv, &ios, 0, 299);
    assert_eq!(past(&kv, 0, 0, &ios[0], 299).0[1], 300);
    assert_eq!(kv.bytes(), 2 * 300 * 3 * 4);
}

#[test]
fn truncation_zeroes_head_major_rows_and_cuts_token_major_ones() {
    let ios = [io(&[2, 3])];
    let mut kv = KvCache::new(CacheLayout::HeadMajor, CacheDtype::Float32, 1, &ios, 4096);
    step(&mut kv, &ios, 0, 8);
    kv.truncate(3);
    let (shape, data) = past(&kv, 0, 0, &ios[0], 3);
    let cap = shape[1] as usize;
    for h in 0..2 {
        let head = &data[h * cap * 3..(h + 1) * cap * 3];
        assert!(head[..9].iter().all(|&x| x != 0.0), "kept rows of head {h}");
        assert!(head[9..].iter().all(|&x| x == 0.0), "cut rows of head {h}");
    }

    let mut tm = KvCache::new(CacheLayout::TokenMajor, CacheDtype::Float32, 1, &ios, 4096);
    step(&mut tm, &ios, 0, 8);
    tm.truncate(3);
    let (shape, data) = past(&tm, 0, 0, &ios[0], 3);
    assert_eq!(shape, vec![3, 2, 3]);
    assert_eq!(data, rows(0, 3, 2, 3));
    assert_eq!(tm.bytes(), 3 * 6 * 4);
}

#[test]
fn an_f16_cache_holds_the_rows_rounded_to_half_and_half_the_bytes() {
    let ios = [io(&[2, 3])];
    let mut kv = KvCache::new(CacheLayout::HeadMajor, CacheDtype::Float16, 1, &ios, 300);
    kv.reserve(2, 0);
    let new: Vec<f32> = (0..12).map(|i| 1.0 + i as f32 / 3.0).collect();
    kv.append(0, 0, &new, 0, 2);
    let (shape, data) = past(&kv, 0, 0, &ios[0], 2);
    let cap = shape[1] as usize;
    for tok in 0..2 {
        for h in 0..2 {
            let want: Vec<f32> = new[(tok * 2 + h) * 3..][..3]
                .iter()
                .map(|&v| f16::from_f32(v).to_f32())
                .collect();
            assert_eq!(&data[(h * cap + tok) * 3..][..3], &want[..]);
        }
    }
    assert!(matches!(kv.past(0, 0, &ios[0], 2).1, PastData::F16(_)));
    assert_eq!(kv.bytes(), 2 * cap * 3 * 2);
    kv.truncate(1);
    let (_, data) = past(&kv, 0, 0, &ios[0], 1);
    assert!(data[3..cap * 3].iter().all(|&x| x == 0.0));
}
