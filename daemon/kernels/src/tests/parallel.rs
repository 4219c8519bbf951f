//! Task splitting: any thread count, any task order and real threads give the serial y.

use super::{Rng, Weights, quantized, run};
use crate::{Parallel, Serial, best_path, matmul};

/// Claims absurd thread counts and runs tasks in order.
struct Claims(usize);

impl Parallel for Claims {
    fn threads(&self) -> usize {
        self.0
    }
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        (0..tasks).for_each(f);
    }
}

#[test]
fn any_thread_count_gives_the_serial_y() {
    let wt = Weights::random(50, 300, 8, 16, false, 5);
    let x = quantized(&Rng(6).f32s(2 * 300), 2, 300, 16);
    let serial = run(best_path(), &wt.matrix(), &x, &Serial);
    for threads in [0, 2, 1000, usize::MAX] {
        assert_eq!(
            run(best_path(), &wt.matrix(), &x, &Claims(threads)),
            serial,
            "{threads} threads"
        );
    }
}

/// Runs tasks last first, and claims several threads so the work is split.
struct Reverse;

impl Parallel for Reverse {
    fn threads(&self) -> usize {
        3
    }
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        assert!(
            tasks > 3,
            "the case must split into several tasks, got {tasks}"
        );
        (0..tasks).rev().for_each(f);
    }
}

#[test]
fn task_order_does_not_change_y() {
    for bits in [4, 8] {
        let (n, k, m, block) = (301, 1000, 130, 64);
        let wt = Weights::random(n, k, bits, block, true, 11);
        let x = quantized(&Rng(12).f32s(m * k), m, k, block);
        let mut y = vec![0f32; m * n];
        assert!(matmul(&wt.matrix(), &x, &mut y, &Reverse).is_ok());
        assert_eq!(y, run(best_path(), &wt.matrix(), &x, &Serial));
    }
}

/// Runs tasks on real threads, each taking the next task number.
pub(super) struct Threads(pub(super) usize);

impl Parallel for Threads {
    fn threads(&self) -> usize {
        self.0
    }
    fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let next = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..self.0 {
                s.spawn(|| {
                    loop {
                        let id = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if id >= tasks {
                            break;
                        }
                        f(id);
                    }
                });
            }
        });
    }
}

#[test]
fn tasks_on_several_threads_give_the_serial_y() {
    let (n, k, m, block) = (517, 640, 9, 32);
    let wt = Weights::random(n, k, 4, block, true, 21);
    let x = quantized(&Rng(22).f32s(m * k), m, k, block);
    let mut y = vec![0f32; m * n];
    assert!(matmul(&wt.matrix(), &x, &mut y, &Threads(4)).is_ok());
    assert_eq!(y, run(best_path(), &wt.matrix(), &x, &Serial));
}
