//! What the server answers, call by call: every scenario runs on both storages (in memory and
//! Redis), which must answer identically.

use std::time::Duration;

use meshguard_rls::proto::rls::rate_limit_response::rate_limit::Unit;

use crate::support::*;

/// Runs each scenario once per storage.
macro_rules! on_both_storages {
    ($($scenario:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(crate::support::Backing::memory()).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(crate::support::Backing::redis()).await;
                }
            )*
        }
    };
}

on_both_storages!(
    ok_until_the_limit_then_over_limit,
    hits_addend_counts_and_zero_means_one,
    variables_make_one_counter_per_value,
    conditions_select_the_requests_a_limit_applies_to,
    unknown_domain_is_ok_and_empty_domain_unknown,
    statuses_report_each_descriptors_limits,
    conditions_on_missing_descriptors_do_not_apply,
    window_resets_after_seconds,
);

async fn ok_until_the_limit_then_over_limit(backing: Backing) {
    let server = server(
        "- {namespace: d, name: three, max_value: 3, seconds: 60, conditions: [], variables: []}",
        &backing,
    )
    .await;
    let mut c = client(&server).await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let r = call(&mut c, "d", &[&[("k", "v")]], 1).await;
        assert_eq!(r.statuses.len(), 1);
        let s = &r.statuses[0];
        let reset = reset(s);
        assert!(
            reset <= Duration::from_secs(60) && reset > Duration::from_secs(50),
            "{reset:?}"
        );
        seen.push((r.overall_code(), summary(s)));
    }
    let limit = Some((3, Unit::Minute, "three".to_owned()));
    assert_eq!(
        seen,
        [
            (OK, (OK, limit.clone(), 2)),
            (OK, (OK, limit.clone(), 1)),
            (OK, (OK, limit.clone(), 0)),
            (OVER, (OVER, limit.clone(), 0)),
            (OVER, (OVER, limit, 0)),
        ]
    );
    let stats = server.stats();
    assert_eq!(
        (stats.requests, stats.ok, stats.over_limit),
        (5, 3, 2),
        "{stats:?}"
    );
}

async fn hits_addend_counts_and_zero_means_one(backing: Backing) {
    let server = server(
        "- {namespace: d, max_value: 10, seconds: 3600, conditions: [], variables: []}",
        &backing,
    )
    .await;
    let mut c = client(&server).await;
    let mut remaining = Vec::new();
    // 4 -> 6 left; 0 counts as 1 -> 5; 6 does not fit (and takes nothing) -> still 5;
    // 5 fits exactly -> 0; 1 more does not fit.
    for addend in [4, 0, 6, 5, 1] {
        let r = call(&mut c, "d", &[&[("k", "v")]], addend).await;
        remaining.push((
            addend,
            r.overall_code(),
            r.statuses[0].code(),
            r.statuses[0].limit_remaining,
        ));
        assert_eq!(
            r.statuses[0].current_limit.as_ref().unwrap().unit(),
            Unit::Hour
        );
    }
    assert_eq!(
        remaining,
        [
            (4, OK, OK, 6),
            (0, OK, OK, 5),
            (6, OVER, OVER, 5),
            (5, OK, OK, 0),
            (1, OVER, OVER, 0),
        ]
    );
}

async fn variables_make_one_counter_per_value(backing: Backing) {
    let server = server(
        r#"
- namespace: d
  max_value: 2
  seconds: 60
  conditions: []
  variables: ["descriptors[0]['user']"]
"#,
        &backing,
    )
    .await;
    let mut c = client(&server).await;
    let alice: &[&[(&str, &str)]] = &[&[("user", "alice")]];
    let bob: &[&[(&str, &str)]] = &[&[("user", "bob")]];
    assert_eq!(codes(&mut c, "d", alice, 3).await, [OK, OK, OVER]);
    assert_eq!(codes(&mut c, "d", bob, 3).await, [OK, OK, OVER]);
    // Without the variable's key the limit does not apply at all.
    let r = call(&mut c, "d", &[&[("other", "x")]], 1).await;
    assert_eq!(r.overall_code(), OK);
    assert_eq!(summary(&r.statuses[0]), bare_ok());
}

async fn conditions_select_the_requests_a_limit_applies_to(backing: Backing) {
    let server = server(
        r#"
- namespace: d
  max_value: 1
  seconds: 60
  conditions: ["descriptors[0]['method'] == 'GET'", "descriptors[0].path != '/health'"]
  variables: []
"#,
        &backing,
    )
    .await;
    let mut c = client(&server).await;
    let get: &[&[(&str, &str)]] = &[&[("method", "GET"), ("path", "/a")]];
    let post: &[&[(&str, &str)]] = &[&[("method", "POST"), ("path", "/a")]];
    let health: &[&[(&str, &str)]] = &[&[("method", "GET"), ("path", "/health")]];
    assert_eq!(codes(&mut c, "d", get, 2).await, [OK, OVER]);
    assert_eq!(codes(&mut c, "d", post, 2).await, [OK, OK]);
    assert_eq!(codes(&mut c, "d", health, 2).await, [OK, OK]);
    // A limit that applies to one namespace does not apply in another.
    assert_eq!(codes(&mut c, "e", get, 2).await, [OK, OK]);
}

async fn unknown_domain_is_ok_and_empty_domain_unknown(backing: Backing) {
    let server = server(
        "- {namespace: d, max_value: 0, seconds: 60, conditions: [], variables: []}",
        &backing,
    )
    .await;
    let mut c = client(&server).await;
    // max_value 0 blocks everything in `d`...
    assert_eq!(codes(&mut c, "d", &[&[("k", "v")]], 1).await, [OVER]);
    // ...and nothing elsewhere.
    let r = call(&mut c, "nope", &[&[("k", "v")], &[("a", "b")]], 1).await;
    assert_eq!(r.overall_code(), OK);
    assert_eq!(r.statuses.len(), 2);
    for s in &r.statuses {
        assert_eq!(summary(s), bare_ok());
    }
    // Limitador answers an empty domain UNKNOWN, with no statuses.
    let r = call(&mut c, "", &[&[("k", "v")]], 1).await;
    assert_eq!(r.overall_code(), meshguard_rls::Code::Unknown);
    assert!(r.statuses.is_empty());
    let stats = server.stats();
    assert_eq!(
        (stats.requests, stats.ok, stats.over_limit, stats.unknown),
        (3, 1, 1, 1)
    );
}

async fn statuses_report_each_descriptors_limits(backing: Backing) {
    let server = server(
        r#"
- {namespace: d, name: path, max_value: 5, seconds: 60, conditions: ["descriptors[0].path == '/a'"], variables: []}
- {namespace: d, name: user, max_value: 1, seconds: 1, conditions: [], variables: ["descriptors[1].user"]}
- {namespace: d, name: all, max_value: 100, seconds: 86400, conditions: [], variables: []}
"#,
        &backing,
    )
    .await;
    let mut c = client(&server).await;
    let both: &[&[(&str, &str)]] = &[&[("path", "/a")], &[("user", "u")], &[("x", "y")]];
    let limit = |n: u32, unit, name: &str| Some((n, unit, name.to_owned()));

    let r = call(&mut c, "d", both, 1).await;
    assert_eq!(r.overall_code(), OK);
    assert_eq!(r.statuses.len(), 3);
    // Descriptor 0 is read by `path` (4 left) and `all` (99 left): `path` is tighter.
    assert_eq!(
        summary(&r.statuses[0]),
        (OK, limit(5, Unit::Minute, "path"), 4)
    );
    // Descriptor 1: `user` (0 left) and `all`.
    assert_eq!(
        summary(&r.statuses[1]),
        (OK, limit(1, Unit::Second, "user"), 0)
    );
    // Descriptor 2 is read only by `all`, which reads no descriptor (so counts for every one).
    assert_eq!(
        summary(&r.statuses[2]),
        (OK, limit(100, Unit::Day, "all"), 99)
    );
    assert!(reset(&r.statuses[1]) <= Duration::from_secs(1));
    assert!(reset(&r.statuses[2]) > Duration::from_secs(86_000));

    // The user is over: the whole request is, nothing is counted, and only descriptor 1 is
    // reported OVER_LIMIT.
    let r = call(&mut c, "d", both, 1).await;
    assert_eq!(r.overall_code(), OVER);
    assert_eq!(
        summary(&r.statuses[0]),
        (OK, limit(5, Unit::Minute, "path"), 4)
    );
    assert_eq!(
        summary(&r.statuses[1]),
        (OVER, limit(1, Unit::Second, "user"), 0)
    );
    assert_eq!(
        summary(&r.statuses[2]),
        (OK, limit(100, Unit::Day, "all"), 99)
    );
}

async fn conditions_on_missing_descriptors_do_not_apply(backing: Backing) {
    // limitador's own `Limit::applies` panics on these (an index out of bounds is an
    // evaluation error, not a missing key); the server must answer normally.
    let server = server(
        r#"
- {namespace: d, max_value: 0, seconds: 60, conditions: ["descriptors[1]['x'] == 'y'"], variables: []}
- {namespace: d, max_value: 0, seconds: 60, conditions: [], variables: ["descriptors[3]['x']"]}
- {namespace: d, max_value: 0, seconds: 60, conditions: ["descriptors[0]['n'] > 3"], variables: []}
- {namespace: d, max_value: 1, seconds: 60, conditions: ["descriptors[0]['x'] == 'y'"], variables: []}
"#,
        &backing,
    )
    .await;
    let mut c = client(&server).await;
    assert_eq!(
        codes(&mut c, "d", &[&[("x", "y"), ("n", "7")]], 3).await,
        [OK, OVER, OVER]
    );
    // Two descriptors: now the first limit applies (and blocks).
    assert_eq!(
        codes(&mut c, "d", &[&[("x", "z")], &[("x", "y")]], 1).await,
        [OVER]
    );
}

async fn window_resets_after_seconds(backing: Backing) {
    let server = server(
        "- {namespace: d, max_value: 2, seconds: 1, conditions: [], variables: []}",
        &backing,
    )
    .await;
    let mut c = client(&server).await;
    let d: &[&[(&str, &str)]] = &[&[("k", "v")]];
    assert_eq!(codes(&mut c, "d", d, 2).await, [OK, OK]);
    let r = call(&mut c, "d", d, 1).await;
    assert_eq!(r.overall_code(), OVER);
    let until_reset = reset(&r.statuses[0]);
    assert!(until_reset <= Duration::from_secs(1), "{until_reset:?}");
    // The window ends when the server said it would (plus a margin for clock granularity).
    tokio::time::sleep(until_reset + Duration::from_millis(50)).await;
    let r = call(&mut c, "d", d, 1).await;
    assert_eq!(summary(&r.statuses[0]).0, OK);
    assert_eq!(r.statuses[0].limit_remaining, 1);
    assert!(reset(&r.statuses[0]) > Duration::from_millis(800));
}
