//! Which request headers a decision reads, so a filter fetches exactly those (one host call
//! each) instead of dumping the header map: in stock Envoy 1.40 a dump costs as much as seven
//! single reads, and most requests carry few of the headers a policy looks at.

/// A request header a decision may read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderRead {
    /// Lower-case name (`:authority` included).
    pub name: String,
    /// The header is a list (`baggage`, `tracestate`, `x-forwarded-for`): read all its
    /// values, joined with `,` as HTTP combines repeated list headers.
    pub all_values: bool,
}

impl HeaderRead {
    /// A header read for its first value.
    pub fn first(name: &str) -> Self {
        Self {
            name: name.to_ascii_lowercase(),
            all_values: false,
        }
    }

    /// A list header, read with all its values.
    pub fn all(name: &str) -> Self {
        Self {
            name: name.to_ascii_lowercase(),
            all_values: true,
        }
    }
}

/// Adds `read` to `reads` unless the header is there already (a list read wins over a
/// first-value read of the same header).
pub fn add(reads: &mut Vec<HeaderRead>, read: HeaderRead) {
    match reads.iter_mut().find(|r| r.name == read.name) {
        Some(r) => r.all_values |= read.all_values,
        None => reads.push(read),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use crate::test;

    #[test]
    fn add_dedups_and_a_list_read_wins() {
        let mut reads = Vec::new();
        add(&mut reads, HeaderRead::first("X-Forwarded-For"));
        add(&mut reads, HeaderRead::first(":path"));
        add(&mut reads, HeaderRead::all("x-forwarded-for"));
        assert_eq!(
            reads,
            vec![
                HeaderRead::all("x-forwarded-for"),
                HeaderRead::first(":path")
            ]
        );
    }
}
