//! Counters in Redis, shared by every server that points at the same Redis.
//!
//! This is the fixed-window counter that envoyproxy/ratelimit and Limitador keep in Redis:
//! `INCRBY` the counter's key and `EXPIRE` it on its first hit, so the key (and the window)
//! disappears `seconds` after the first hit. It is one Lua script per request, which Redis runs
//! atomically, so servers cannot interleave between the check and the increment; it checks
//! every counter of the request first and increments only when all have room (see
//! [`crate::storage`] for why all or nothing).
//!
//! Why not limitador's own `redis_storage`: limitador 0.13/0.14 do not compile with
//! `redis_storage` alone (one of its modules is gated on `disk_storage`), and `disk_storage`
//! builds RocksDB from C++ through bindgen (libclang, and a long build on two cores) for a
//! feature these tests never use. Its Redis mode is also not exact by design (it batches
//! updates through a local cache), which a reference server for accuracy tests should be.
//!
//! Keys are `meshguard-rls:` followed by a JSON array of the limit's identity (namespace,
//! seconds, sorted conditions, sorted variables) and the counter's variable values, so every
//! server loading the same limits file computes the same keys, and a changed `max_value`
//! keeps counting in the same key (as in Limitador).

use std::time::Duration;

use limitador::counter::Counter;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{CounterState, Outcome, StorageError};

/// Prefix of every key this server writes.
pub const KEY_PREFIX: &str = "meshguard-rls:";

/// How long connecting to Redis, and each Redis call, may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// KEYS[i]: counter i. ARGV[1]: hits to add. ARGV[2i]: max_value of counter i, ARGV[2i+1]: its
/// window in milliseconds. Returns `{admitted, value_1, pttl_1, value_2, pttl_2, ...}` with
/// each value as it was before this request and each TTL as it is after it (a full window for
/// a counter that this request created; -2 for one that does not exist).
const CHECK_AND_INCR: &str = r"
local delta = tonumber(ARGV[1])
local before = {}
local ttls = {}
local admitted = 1
for i = 1, #KEYS do
  local value = tonumber(redis.call('GET', KEYS[i]) or '0')
  before[i] = value
  ttls[i] = redis.call('PTTL', KEYS[i])
  if value + delta > tonumber(ARGV[2 * i]) then
    admitted = 0
  end
end
if admitted == 1 then
  for i = 1, #KEYS do
    redis.call('INCRBY', KEYS[i], delta)
    if ttls[i] < 0 then
      redis.call('PEXPIRE', KEYS[i], ARGV[2 * i + 1])
      ttls[i] = tonumber(ARGV[2 * i + 1])
    end
  end
end
local out = {admitted}
for i = 1, #KEYS do
  out[#out + 1] = before[i]
  out[#out + 1] = ttls[i]
end
return out
";

pub(crate) struct RedisCounters {
    connection: ConnectionManager,
    script: Script,
}

impl std::fmt::Debug for RedisCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCounters").finish_non_exhaustive()
    }
}

impl RedisCounters {
    /// Connects to Redis (failing fast when it is not there); later connection losses are
    /// retried in the background by the connection manager, and calls made meanwhile fail.
    pub(crate) async fn connect(url: &str) -> anyhow::Result<Self> {
        let client =
            redis::Client::open(url).map_err(|e| anyhow::anyhow!("bad Redis URL {url:?}: {e}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let connection = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| anyhow::anyhow!("connecting to Redis at {url}: {e}"))?;
        Ok(Self {
            connection,
            script: Script::new(CHECK_AND_INCR),
        })
    }

    pub(crate) async fn check_and_update(
        &self,
        counters: &[Counter],
        delta: u64,
    ) -> Result<Outcome, StorageError> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(delta);
        for counter in counters {
            invocation
                .key(key(counter))
                .arg(counter.max_value())
                .arg(window_ms(counter));
        }
        let mut connection = self.connection.clone();
        let reply: Vec<i64> = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(|e| StorageError(e.to_string()))?;
        parse_reply(&reply, counters)
    }
}

fn window_ms(counter: &Counter) -> u64 {
    counter.limit().seconds().saturating_mul(1000)
}

/// The Redis key of a counter.
pub(crate) fn key(counter: &Counter) -> String {
    let limit = counter.limit();
    let mut conditions: Vec<String> = limit.conditions().into_iter().collect();
    conditions.sort();
    let mut variables: Vec<String> = limit.variables().into_iter().collect();
    variables.sort();
    let identity = serde_json::json!([
        limit.namespace().as_ref(),
        limit.seconds(),
        conditions,
        variables,
        counter.set_variables(),
    ]);
    format!("{KEY_PREFIX}{identity}")
}

fn parse_reply(reply: &[i64], counters: &[Counter]) -> Result<Outcome, StorageError> {
    let malformed = || StorageError(format!("unexpected script reply {reply:?}"));
    let (admitted, pairs) = reply.split_first().ok_or_else(malformed)?;
    if pairs.len() != counters.len().saturating_mul(2) {
        return Err(malformed());
    }
    let states = pairs
        .chunks_exact(2)
        .zip(counters)
        .map(|(pair, counter)| {
            let (value, pttl) = match pair {
                [value, pttl] => (*value, *pttl),
                _ => return Err(malformed()),
            };
            let value = u64::try_from(value).map_err(|_| malformed())?;
            // A missing key (-2) or one without expiry (-1) has a full window ahead.
            let expires_in = u64::try_from(pttl).map_or_else(
                |_| Duration::from_millis(window_ms(counter)),
                Duration::from_millis,
            );
            Ok(CounterState {
                remaining_before: counter.max_value().saturating_sub(value),
                expires_in,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Outcome {
        admitted: *admitted == 1,
        states,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use limitador::limit::{Context, Limit};

    use super::*;

    fn counter(limit: Limit, values: &[(&str, &str)]) -> Counter {
        let map: HashMap<String, String> = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let mut ctx = Context::default();
        ctx.list_binding("descriptors".into(), vec![map]);
        Counter::new(limit, &ctx).unwrap().unwrap()
    }

    #[test]
    fn keys_name_the_limit_and_the_values() {
        let limit = Limit::new(
            "ns",
            10,
            60,
            vec![
                "descriptors[0].b == '2'".try_into().unwrap(),
                "descriptors[0].a == '1'".try_into().unwrap(),
            ],
            vec!["descriptors[0].user".try_into().unwrap()],
        );
        let c = counter(limit.clone(), &[("a", "1"), ("b", "2"), ("user", "alice")]);
        assert_eq!(
            key(&c),
            r#"meshguard-rls:["ns",60,["descriptors[0].a == '1'","descriptors[0].b == '2'"],["descriptors[0].user"],{"descriptors[0].user":"alice"}]"#
        );
        let bob = counter(limit, &[("a", "1"), ("b", "2"), ("user", "bob")]);
        assert_ne!(key(&c), key(&bob));
    }

    #[test]
    fn replies_are_parsed_and_checked() {
        let limit = Limit::new(
            "ns",
            10,
            60,
            Vec::new(),
            Vec::<limitador::limit::Expression>::new(),
        );
        let c = counter(limit, &[]);
        let cs = [c.clone(), c];
        let out = parse_reply(&[1, 3, 59_000, 0, -2], &cs).unwrap();
        assert!(out.admitted);
        assert_eq!(
            out.states,
            [
                CounterState {
                    remaining_before: 7,
                    expires_in: Duration::from_millis(59_000)
                },
                CounterState {
                    remaining_before: 10,
                    expires_in: Duration::from_secs(60)
                },
            ]
        );
        assert!(!parse_reply(&[0, 12, 1, 0, 1], &cs).unwrap().admitted);
        assert_eq!(
            parse_reply(&[0, 12, 1, 0, 1], &cs).unwrap().states[0].remaining_before,
            0
        );
        assert!(parse_reply(&[1, 3, 59_000], &cs).is_err());
        assert!(parse_reply(&[], &cs).is_err());
        assert!(parse_reply(&[1, -3, 5, 0, 1], &cs).is_err());
    }
}
