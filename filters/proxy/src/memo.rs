//! What a [`crate::http::RequestMemo`] scope remembers: properties and the monotonic clock,
//! each asked of the host once per scope. A Wasm VM is single-threaded, so a thread-local is
//! the VM's one copy.
//!
//! This runs on every request of the bundle, so it allocates nothing per request once warm:
//! paths are interned for the life of the VM (they come from code and config, so they are
//! few; past [`MAX_NAMES`] reads simply go to the host), and a scope's answers sit in a reused
//! vector indexed by name. Only a found value is copied (one for the memo, one for the caller).
//!
//! Request headers are not remembered: a header miss is the cheapest host call there is, two
//! policies rarely read the same header, and in the bundle remembering them cost more guest
//! work (about 2k Wasm instructions per request) than the calls it saved.

use std::cell::RefCell;

/// A property path's name: its segments joined by NUL, as the ABI encodes it (no segment
/// holds a NUL, so no two paths share a name).
fn name_of(path: &[&str]) -> String {
    path.join("\0")
}

/// `joined == path.join("\0")`, without joining.
fn joined_eq(joined: &str, path: &[&str]) -> bool {
    let mut rest = joined;
    for (i, seg) in path.iter().enumerate() {
        if i > 0 {
            let Some(r) = rest.strip_prefix('\0') else {
                return false;
            };
            rest = r;
        }
        let Some(r) = rest.strip_prefix(seg) else {
            return false;
        };
        rest = r;
    }
    rest.is_empty()
}

/// Distinct paths remembered per VM (a bound: `request.headers.<name>` paths come from config).
pub(crate) const MAX_NAMES: usize = 64;

#[derive(Debug, Default)]
struct Memo {
    active: bool,
    /// Every path asked so far (see [`name_of`]), kept across scopes.
    names: Vec<String>,
    /// This scope's answers: (index into `names`, value).
    values: Vec<(usize, Option<Vec<u8>>)>,
    clock_ns: Option<u64>,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

pub(crate) fn set_active(active: bool) {
    MEMO.with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            m.active = active;
            m.values.clear();
            m.clock_ns = None;
        }
    });
}

pub(crate) fn forget() {
    MEMO.with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            m.values.clear();
        }
    });
}

/// Where `path` is remembered in this scope: `Err(None)` outside a scope (or past
/// [`MAX_NAMES`]), `Err(Some(index))` when not asked yet in this scope, `Ok(value)` when it was.
fn lookup(path: &[&str]) -> Result<Option<Vec<u8>>, Option<usize>> {
    MEMO.with(|m| {
        let mut m = m.try_borrow_mut().map_err(|_| None)?;
        if !m.active {
            return Err(None);
        }
        let index = match m.names.iter().position(|n| joined_eq(n, path)) {
            Some(i) => i,
            None if m.names.len() < MAX_NAMES => {
                m.names.push(name_of(path));
                m.names.len().saturating_sub(1)
            }
            None => return Err(None),
        };
        match m.values.iter().find(|(i, _)| *i == index) {
            Some((_, v)) => Ok(v.clone()),
            None => Err(Some(index)),
        }
    })
}

/// The property at `path`: remembered within a scope, else `read` from the host.
pub(crate) fn cached(path: &[&str], read: impl FnOnce() -> Option<Vec<u8>>) -> Option<Vec<u8>> {
    let index = match lookup(path) {
        Ok(v) => return v,
        Err(None) => return read(),
        Err(Some(i)) => i,
    };
    let value = read();
    MEMO.with(|m| {
        if let Ok(mut m) = m.try_borrow_mut()
            && m.active
        {
            m.values.push((index, value.clone()));
        }
    });
    value
}

/// The monotonic clock, read once per scope (the policies of one callback see one instant).
pub(crate) fn clock(read: impl FnOnce() -> u64) -> u64 {
    let hit = MEMO.with(|m| m.try_borrow().ok().filter(|m| m.active)?.clock_ns);
    if let Some(t) = hit {
        return t;
    }
    let t = read();
    MEMO.with(|m| {
        if let Ok(mut m) = m.try_borrow_mut()
            && m.active
        {
            m.clock_ns = Some(t);
        }
    });
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_paths_match_only_their_own_segments() {
        let name = name_of;
        assert!(joined_eq(
            &name(&["xds", "cluster_name"]),
            &["xds", "cluster_name"]
        ));
        assert!(joined_eq(&name(&["a"]), &["a"]));
        assert!(!joined_eq(&name(&["xds", "cluster_name"]), &["xds"]));
        assert!(!joined_eq(&name(&["xds"]), &["xds", "cluster_name"]));
        assert!(!joined_eq(&name(&["a.b"]), &["a", "b"]));
        assert!(!joined_eq(&name(&["a", "b"]), &["a.b"]));
        assert!(!joined_eq(&name(&["ab"]), &["a", "b"]));
    }
}
