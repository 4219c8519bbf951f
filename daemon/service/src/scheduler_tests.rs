//! Unit tests of the scheduler (scheduler.rs): admission order, Busy, cancellation, per-user share.

use super::*;

/// Three requests wait behind a running one; they start in the order they were admitted,
/// whatever order their tasks poll in, and a cancelled one gives up its turn.
#[tokio::test]
async fn waiting_requests_start_in_admission_order() {
    let s = Scheduler::new(1, 8);
    let mut first = s.admit(":1.1", 1000).expect("first");
    first.run_slot().await.expect("slot");
    let tickets: Vec<Ticket> = (2..=5)
        .map(|i| s.admit(&format!(":1.{i}"), 1000).expect("queued"))
        .collect();
    // The second admitted (id 3) is cancelled before it runs.
    assert!(s.cancel(3));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    // Spawned newest first, so polling order alone would run them backwards.
    for mut t in tickets.into_iter().rev() {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let id = t.id();
            if t.run_slot().await.is_ok() {
                let _ = tx.send(id);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            drop(t);
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(first);
    for task in tasks {
        task.await.expect("task");
    }
    drop(tx);
    let mut order = Vec::new();
    while let Some(id) = rx.recv().await {
        order.push(id);
    }
    assert_eq!(order, vec![2, 4, 5]);
    assert_eq!(s.load(), Load::default());
}

#[tokio::test]
async fn busy_past_queue_and_cancel_by_owner() {
    let s = Scheduler::new(1, 1);
    let mut a = s.admit(":1.1", 1000).expect("first");
    a.run_slot().await.expect("slot");
    let mut b = s.admit(":1.2", 1000).expect("queued");
    let Err(err) = s.admit(":1.3", 1000) else {
        panic!("a third request must be refused")
    };
    assert!(matches!(err, ServiceError::Busy(_)), "{err:?}");
    assert_eq!(
        s.load(),
        Load {
            running: 1,
            queued: 1
        }
    );
    assert_eq!(s.cancel_owner(":1.2"), 1);
    let err = b.run_slot().await.expect_err("cancelled");
    assert!(matches!(err, ServiceError::Cancelled(_)), "{err:?}");
    drop(b);
    drop(a);
    assert_eq!(s.load(), Load::default());
    assert_eq!(s.drain(Duration::from_millis(10)).await, 0);
    assert!(matches!(
        s.admit(":1.4", 1000).err(),
        Some(ServiceError::ShuttingDown(_))
    ));
}

/// One user's burst stops at its share; another user still gets a place, and the share
/// comes back as the first user's requests finish.
#[tokio::test]
async fn one_user_cannot_take_every_place() {
    let s = Scheduler::new(1, 8);
    s.set_per_user(3);
    let mine: Vec<Ticket> = (0..3)
        .map(|i| s.admit(&format!(":1.{i}"), 1000).expect("within the share"))
        .collect();
    let Err(err) = s.admit(":1.9", 1000) else {
        panic!("a fourth request of the same user must be refused")
    };
    assert!(matches!(err, ServiceError::Busy(_)), "{err:?}");
    assert!(
        err.to_string().contains("service.max_requests_per_user")
            && err.to_string().contains("at most 3 per user"),
        "{}",
        err.to_string()
    );
    let other = s.admit(":1.20", 1001).expect("another user is admitted");
    drop(mine);
    let again = s.admit(":1.10", 1000).expect("places come back");
    assert_eq!(s.load().queued, 2);
    drop((other, again));
    assert_eq!(s.load(), Load::default());
    assert!(s.lock().held.is_empty());
}
