//! Redis mode: several servers enforce one limit together; Redis failures are reported so the
//! client applies its failure mode.

use std::time::Duration;

use meshguard_rls::{Limits, RedisServer, RlsServer, Storage};

use crate::support::*;

const SHARED: &str = r#"
- namespace: d
  max_value: 10
  seconds: 60
  conditions: ["descriptors[0].route == 'checkout'"]
  variables: ["descriptors[0].user"]
"#;

#[tokio::test]
async fn two_servers_sharing_redis_enforce_one_limit() {
    let backing = Backing::redis();
    let a = server(SHARED, &backing).await;
    let b = server(SHARED, &backing).await;
    let mut ca = client(&a).await;
    let mut cb = client(&b).await;
    let alice: &[&[(&str, &str)]] = &[&[("route", "checkout"), ("user", "alice")]];
    let mut seen = Vec::new();
    for i in 0..8 {
        let c = if i % 2 == 0 { &mut ca } else { &mut cb };
        let r = call(c, "d", alice, 1).await;
        seen.push((r.overall_code(), r.statuses[0].limit_remaining));
    }
    // The two servers count in one counter: remaining goes down by one per call, whichever
    // server answers it.
    let expected: Vec<_> = (0..8).map(|i| (OK, 9 - i)).collect();
    assert_eq!(seen, expected);
    assert_eq!(codes(&mut ca, "d", alice, 3).await, [OK, OK, OVER]);
    assert_eq!(codes(&mut cb, "d", alice, 1).await, [OVER]);
    // Another value has its own counter, shared too.
    let bob: &[&[(&str, &str)]] = &[&[("route", "checkout"), ("user", "bob")]];
    assert_eq!(codes(&mut cb, "d", bob, 1).await, [OK]);
}

#[tokio::test]
async fn concurrent_calls_through_two_servers_admit_exactly_the_limit() {
    let backing = Backing::redis();
    let a = server(SHARED, &backing).await;
    let b = server(SHARED, &backing).await;
    let clients = [client(&a).await, client(&b).await];
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..40 {
        let mut c = clients[i % 2].clone();
        calls.spawn(async move {
            call(
                &mut c,
                "d",
                &[&[("route", "checkout"), ("user", "carol")]],
                1,
            )
            .await
            .overall_code()
        });
    }
    let mut admitted = 0;
    while let Some(code) = calls.join_next().await {
        if code.unwrap() == OK {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10);
    let (sa, sb) = (a.stats(), b.stats());
    assert_eq!(sa.ok + sb.ok, 10, "{sa:?} {sb:?}");
    assert_eq!(sa.over_limit + sb.over_limit, 30, "{sa:?} {sb:?}");
}

#[tokio::test]
async fn redis_going_away_is_answered_unavailable() {
    let redis = RedisServer::start().unwrap();
    let server = RlsServer::start(
        Limits::from_yaml(SHARED).unwrap(),
        Storage::redis(redis.url()),
    )
    .await
    .unwrap();
    let mut c = client(&server).await;
    let alice = meshguard_rls::request("d", &[&[("route", "checkout"), ("user", "a")]], 1);
    assert!(c.should_rate_limit(alice.clone()).await.is_ok());
    drop(redis);
    let status = tokio::time::timeout(WAIT, c.should_rate_limit(alice))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(server.stats().storage_errors, 1);
    // A request no limit applies to does not touch Redis.
    assert_eq!(codes(&mut c, "other", &[&[("k", "v")]], 1).await, [OK]);
}

#[tokio::test]
async fn start_fails_when_redis_is_not_there() {
    // A port nothing listens on: bound and released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let result = tokio::time::timeout(
        WAIT,
        RlsServer::start(
            Limits::empty(),
            Storage::redis(format!("redis://127.0.0.1:{port}")),
        ),
    )
    .await
    .unwrap();
    let error = format!("{:#}", result.unwrap_err());
    assert!(error.contains("connecting to Redis"), "{error}");
    let error = format!(
        "{:#}",
        RlsServer::start(Limits::empty(), Storage::redis("nonsense"))
            .await
            .unwrap_err()
    );
    assert!(error.contains("bad Redis URL"), "{error}");
}

#[test]
fn redis_server_helper_answers_and_stops() {
    let redis = RedisServer::start().unwrap();
    let addr = redis.addr();
    assert!(std::net::TcpStream::connect(addr).is_ok());
    assert_eq!(redis.url(), format!("redis://{addr}"));
    drop(redis);
    // Killed and reaped on drop: the port no longer accepts.
    let deadline = std::time::Instant::now() + WAIT;
    while std::net::TcpStream::connect(addr).is_ok() {
        assert!(std::time::Instant::now() < deadline, "redis still up");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_missing_redis_server_is_an_error_that_says_how_to_install_it() {
    let error = RedisServer::start_binary("meshguard-no-such-redis-server").unwrap_err();
    let error = format!("{error:#}");
    assert!(
        error.contains("Debian package redis-server") && error.contains("./build.sh setup"),
        "{error}"
    );
}
