//! What a [`crate::http::RequestMemo`] scope remembers: request headers, properties and the
//! monotonic clock, each asked of the host once per scope. A Wasm VM is single-threaded, so a
//! thread-local is the VM's one copy.

use std::cell::RefCell;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Header,
    Property,
}

#[derive(Debug, Default)]
struct Memo {
    active: bool,
    values: Vec<(Kind, String, Option<Vec<u8>>)>,
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

/// True inside a [`crate::http::RequestMemo`] scope.
pub(crate) fn active() -> bool {
    MEMO.with(|m| m.try_borrow().is_ok_and(|m| m.active))
}

pub(crate) fn forget() {
    MEMO.with(|m| {
        if let Ok(mut m) = m.try_borrow_mut() {
            m.values.clear();
        }
    });
}

pub(crate) fn cached(
    kind: Kind,
    key: &str,
    read: impl FnOnce() -> Option<Vec<u8>>,
) -> Option<Vec<u8>> {
    let hit = MEMO.with(|m| {
        let m = m.try_borrow().ok()?;
        if !m.active {
            return None;
        }
        m.values
            .iter()
            .find(|(k, name, _)| *k == kind && name == key)
            .map(|(_, _, v)| v.clone())
    });
    if let Some(v) = hit {
        return v;
    }
    let value = read();
    MEMO.with(|m| {
        if let Ok(mut m) = m.try_borrow_mut()
            && m.active
        {
            m.values.push((kind, key.to_owned(), value.clone()));
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
