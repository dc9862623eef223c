//! Target `selector_parse`: the selector text form.
//!
//! - Any text parses to a selector or a [`SelectorError`](flashsync_core::SelectorError),
//!   never a panic, and the error displays.
//! - A parsed selector's `Display` re-parses to an equal selector.
//! - A selector built from arbitrary `(namespace, [names])` patterns (the
//!   map form applications build) displays as text that re-parses to an
//!   equal selector.
//! - Wildcard matching ([`Pattern::matches`]) agrees with a simple reference
//!   matcher, and `Selector::matches` never panics.

use arbitrary::{Arbitrary, Unstructured};
use flashsync_core::{Pattern, Selector, ViewName};

/// The `selector_parse` target body (see the [module docs](self)).
pub fn selector_parse(data: &[u8]) {
    // The whole input as text first: seeds are plain selector strings.
    let text = String::from_utf8_lossy(data);
    check_text(&text);

    let mut u = Unstructured::new(data);
    let Ok(input) = Structured::arbitrary(&mut u) else { return };
    check_text(&input.text);
    let entries: Vec<(String, Vec<String>)> = input.map.clone();
    if let Ok(sel) = Selector::from_map(entries.iter().map(|(ns, names)| (ns.clone(), names.clone()))) {
        if !matches!(&sel, Selector::Map(m) if m.is_empty() || m.values().any(Vec::is_empty)) {
            let shown = sel.to_string();
            match shown.parse::<Selector>() {
                Ok(back) => assert_eq!(back, sel, "{sel:?} displays as {shown:?}, which parses differently"),
                Err(e) => panic!("{sel:?} displays as {shown:?}, which does not parse: {e}"),
            }
        }
        if let Ok(view) = ViewName::new(input.probe.0.clone(), input.probe.1.clone()) {
            let _ = sel.matches(&view);
        }
    }
    // Glob semantics against a reference matcher, on bounded sizes.
    if let Ok(p) = Pattern::new(input.pattern.clone()) {
        if input.pattern.len() <= 24 && input.subject.len() <= 48 {
            assert_eq!(
                p.matches(&input.subject),
                reference_glob(input.pattern.as_bytes(), input.subject.as_bytes()),
                "pattern {:?} against {:?}",
                input.pattern,
                input.subject
            );
        }
    }
}

/// Structured input for the map-form and matcher checks.
#[derive(Arbitrary, Debug)]
struct Structured {
    text: String,
    map: Vec<(String, Vec<String>)>,
    probe: (String, String),
    pattern: String,
    subject: String,
}

fn check_text(text: &str) {
    match text.parse::<Selector>() {
        Ok(sel) => {
            let shown = sel.to_string();
            match shown.parse::<Selector>() {
                Ok(back) => {
                    assert_eq!(back, sel, "{text:?} parses to {sel:?}, shown as {shown:?}, which parses differently")
                }
                Err(e) => panic!("{text:?} parses to {sel:?}, shown as {shown:?}, which does not parse: {e}"),
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
}

/// Reference wildcard matcher: dynamic programming over bytes, `*` matching
/// any run (the same byte-level semantics the pattern documents).
fn reference_glob(p: &[u8], t: &[u8]) -> bool {
    // m[j] = pattern prefix of length i matches text prefix of length j.
    let mut m = vec![false; t.len() + 1];
    m[0] = true;
    for &pc in p {
        let mut next = vec![false; t.len() + 1];
        if pc == b'*' {
            let mut any = false;
            for j in 0..=t.len() {
                any |= m[j];
                next[j] = any;
            }
        } else {
            for j in 1..=t.len() {
                next[j] = m[j - 1] && t[j - 1] == pc;
            }
        }
        m = next;
    }
    m[t.len()]
}

#[cfg(test)]
mod tests {
    use super::reference_glob;

    #[test]
    fn reference_glob_basics() {
        assert!(reference_glob(b"a*c", b"abbc"));
        assert!(reference_glob(b"*", b""));
        assert!(!reference_glob(b"a*c", b"ab"));
        assert!(reference_glob(b"**a", b"ba"));
    }
}
