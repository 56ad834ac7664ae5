//! Shared data (CAS, keyed by vm_id) and shared queues (last registrant is the owner).

use crate::support::*;

#[test]
fn shared_data_cas_rules() -> Result {
    let mut envoy = probe()?.vm_id("vm-a").build()?;
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("shared"), true)?;
    let line = probe_line(&envoy, "shared").unwrap();
    assert_eq!(
        field(&line, "get").as_deref(),
        Some("1"),
        "missing key: NOT_FOUND"
    );
    assert_eq!(
        field(&line, "stale_set").as_deref(),
        Some("0"),
        "a set on a missing key ignores cas"
    );
    assert_eq!(
        field(&line, "set").as_deref(),
        Some("0"),
        "cas 0 is unconditional"
    );
    assert_eq!(
        field(&line, "cas2").as_deref(),
        Some("2"),
        "the global counter starts at 1; each set takes a fresh one"
    );
    let s = envoy.new_stream();
    envoy.send_request_headers(s, get("shared"), true)?;
    let second = &probe_lines(&envoy, "shared")[1];
    assert_eq!(field(second, "get").as_deref(), Some("0"));
    assert_eq!(field(second, "cas").as_deref(), Some("2"));
    assert_eq!(
        field(second, "stale_set").as_deref(),
        Some("8"),
        "a stale cas on an existing key: CAS_MISMATCH"
    );
    assert_eq!(
        field(second, "set").as_deref(),
        Some("0"),
        "the current cas wins"
    );
    assert_eq!(field(second, "cas2").as_deref(), Some("3"));
    assert_eq!(
        envoy
            .shared_data("probe_key")
            .map(|(v, c)| (String::from_utf8(v).unwrap(), c)),
        Some(("2".to_string(), 3))
    );
    Ok(())
}

#[test]
fn shared_data_is_scoped_by_vm_id_and_configure_side_effects_repeat() -> Result {
    let mut envoy = probe()?.vm_id("a").plugin_config("shared_init").build()?;
    let (_, cas) = envoy.shared_data("init").unwrap();
    assert_eq!(
        cas, 4,
        "canary, main and two workers each set it in on_configure"
    );
    envoy.set_shared_data("other", b"x");
    assert_eq!(
        envoy.shared_data_keys(),
        [b"init".to_vec(), b"other".to_vec()]
    );
    let other = probe()?.vm_id("b").build()?;
    assert!(
        other.shared_data("init").is_none(),
        "another Envoy shares nothing"
    );
    Ok(())
}

#[test]
fn queue_ready_goes_to_the_last_registrant() -> Result {
    let mut envoy = probe()?.workers(2).plugin_config("queue").build()?;
    let s = envoy.new_stream_on(0);
    envoy.send_request_headers(s, get("enqueue"), true)?;
    let line = probe_line(&envoy, "enqueue").unwrap();
    assert_eq!(
        line,
        "resolve=0 enqueue=0 resolve_missing=1 dequeue_unknown=1"
    );
    let ready: Vec<_> = envoy
        .logs()
        .into_iter()
        .filter(|l| l.message.starts_with("probe:queue_ready:"))
        .collect();
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].vm, "worker1", "worker1 registered last");
    assert!(
        ready[0].message.ends_with("status=0 value=item"),
        "{}",
        ready[0].message
    );
    assert_eq!(envoy.queue_len("probe_q"), Some(0));
    Ok(())
}
