//! Capacity: N worker slots, strict FIFO queue, bounded queue rejects with 503.

use std::time::Duration;

use meshguard_upstream::{Capacity, Latency, Queue, Upstream, UpstreamConfig, knob};
use tokio::time::Instant;

use crate::support::*;

fn capacity(concurrency: usize, queue: Queue, ms: u64) -> UpstreamConfig {
    UpstreamConfig {
        latency: Latency::Fixed { ms },
        capacity: Some(Capacity { concurrency, queue }),
        ..UpstreamConfig::default()
    }
}

/// Sends GET / from a task, once the upstream has seen the previous `seen` requests, so
/// arrival order is known.
async fn spawn_in_order(
    up: &Upstream,
    seen: u64,
    proto: Proto,
) -> tokio::task::JoinHandle<(Reply, Instant)> {
    up.wait_for_stats(WAIT, |s| s.received >= seen)
        .await
        .unwrap();
    let addr = up.addr();
    tokio::spawn(async move {
        let reply = get(proto, addr, "/", &[]).await;
        (reply, Instant::now())
    })
}

#[tokio::test]
async fn two_slots_serve_six_requests_in_three_rounds_fifo() {
    for proto in BOTH {
        let up = start(capacity(2, Queue::Unbounded, 100)).await;
        let begun = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..6 {
            tasks.push(spawn_in_order(&up, i, proto).await);
        }
        let stats = up.wait_for_stats(WAIT, |s| s.received == 6).await.unwrap();
        assert!(stats.in_flight <= 2, "{stats:?}");
        let mut done = Vec::new();
        for task in tasks {
            let (reply, at) = task.await.unwrap();
            assert_eq!(reply.status, 200);
            done.push(at.duration_since(begun));
        }
        // Request i (in arrival order) is served in round i/2 + 1: never earlier.
        for (i, at) in done.iter().enumerate() {
            let round = u32::try_from(i / 2 + 1).unwrap();
            assert!(
                *at >= Duration::from_millis(100) * round,
                "request {i} done at {at:?}"
            );
        }
        // FIFO: a later round never finishes before an earlier one.
        assert!(done[0].max(done[1]) <= done[2].min(done[3]), "{done:?}");
        assert!(done[2].max(done[3]) <= done[4].min(done[5]), "{done:?}");
        assert!(done[5] < WAIT, "{done:?}");
        let stats = drained(&up).await;
        assert_eq!(stats.max_in_flight, 2);
        assert_eq!((stats.received, stats.completed), (6, 6));
        assert_eq!(stats.statuses[&200], 6);
    }
}

#[tokio::test]
async fn queue_counts_waiters() {
    let up = start(capacity(1, Queue::Unbounded, 200)).await;
    let mut tasks = Vec::new();
    for i in 0..4 {
        tasks.push(spawn_in_order(&up, i, Proto::H1).await);
    }
    let stats = up
        .wait_for_stats(WAIT, |s| s.received == 4 && s.queued == 3)
        .await
        .unwrap();
    assert_eq!(stats.in_flight, 1);
    for task in tasks {
        assert_eq!(task.await.unwrap().0.status, 200);
    }
    let stats = drained(&up).await;
    assert_eq!(stats.max_in_flight, 1);
}

#[tokio::test]
async fn full_bounded_queue_answers_503_at_once() {
    for proto in BOTH {
        let up = start(capacity(1, Queue::Bounded(1), 300)).await;
        let serving = spawn_in_order(&up, 0, proto).await;
        up.wait_for_stats(WAIT, |s| s.in_flight == 1).await.unwrap();
        let waiting = spawn_in_order(&up, 1, proto).await;
        up.wait_for_stats(WAIT, |s| s.queued == 1).await.unwrap();

        let begun = Instant::now();
        let rejected = get(proto, up.addr(), "/", &[]).await;
        assert_eq!(rejected.status, 503);
        assert_eq!(rejected.header(knob::QUEUE_FULL), Some("1"));
        // Rejected without waiting for the 300 ms in service.
        assert!(
            begun.elapsed() < Duration::from_millis(300),
            "{:?}",
            begun.elapsed()
        );

        assert_eq!(serving.await.unwrap().0.status, 200);
        assert_eq!(waiting.await.unwrap().0.status, 200);
        let stats = drained(&up).await;
        assert_eq!(stats.queue_full, 1);
        assert_eq!(stats.statuses[&503], 1);
        assert_eq!(stats.statuses[&200], 2);
        assert_eq!(stats.max_in_flight, 1);
    }
}

#[tokio::test]
async fn abandoned_waiter_leaves_the_queue() {
    let up = start(capacity(1, Queue::Bounded(1), 300)).await;
    let serving = spawn_in_order(&up, 0, Proto::H1).await;
    up.wait_for_stats(WAIT, |s| s.in_flight == 1).await.unwrap();
    let mut waiting = tokio::net::TcpStream::connect(up.addr()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut waiting, b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    up.wait_for_stats(WAIT, |s| s.queued == 1).await.unwrap();
    drop(waiting);
    up.wait_for_stats(WAIT, |s| s.queued == 0 && s.completed == 1)
        .await
        .unwrap();
    assert_eq!(serving.await.unwrap().0.status, 200);
    drained(&up).await;
}
