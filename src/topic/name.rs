//! The representation behind [`Topic`](super::Topic): a name of up to [`INLINE_CAP`] bytes
//! stored inline, a longer one in an `Arc<str>`; 24 bytes either way.
//!
//! # Why not `smol_str`
//!
//! A handler-form delivery clones its session's copy of the topic into the handler's
//! arguments and compares the message's topic with the session's table keys. `smol_str` 0.2
//! keeps an inline name's length in its first byte and the 23 bytes after it, and the compiler
//! copies those bytes in pieces at odd offsets (two overlapping 4-byte moves, then 8-byte
//! moves), which the next 16-byte move of the whole value reads back: a load the CPU cannot
//! forward from the stores before it, so it waits for them, on every delivery (`perf annotate`
//! of `end_to_end/fanout-handlers/1000` shows those waits and `SmolStr::eq`). Here the bytes
//! come first and the length last, so an inline name is copied and compared as whole words.
//!
//! # Invariants
//!
//! - A name of at most [`INLINE_CAP`] bytes is always `Inline`, a longer one always `Shared`, so
//!   names of both kinds are never equal and two inline names are equal exactly when all of
//!   their bytes are.
//! - An inline name's bytes past its length are zero, and the bytes up to it are a copy of a
//!   `str`'s, never changed after.

// std's `Arc`, not the loom stand-in: a name's count is never part of a concurrency model.
use std::sync::Arc;

/// The longest name stored inline.
const INLINE_CAP: usize = 23;

/// An inline name's length: an enum, not a `u8`, so the values it cannot take (24 and up) are
/// where the compiler keeps the discriminant of [`Repr`], and a [`Name`] stays 24 bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum InlineLen {
    L0 = 0,
    L1,
    L2,
    L3,
    L4,
    L5,
    L6,
    L7,
    L8,
    L9,
    L10,
    L11,
    L12,
    L13,
    L14,
    L15,
    L16,
    L17,
    L18,
    L19,
    L20,
    L21,
    L22,
    L23,
}

impl InlineLen {
    const ALL: [InlineLen; INLINE_CAP + 1] = {
        use InlineLen::*;
        [
            L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, L10, L11, L12, L13, L14, L15, L16, L17, L18, L19, L20,
            L21, L22, L23,
        ]
    };
}

/// Bytes first, length last: no field at an odd offset, so the compiler moves it in words.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(8))]
struct Inline {
    bytes: [u8; INLINE_CAP],
    len: InlineLen,
}

impl Inline {
    fn new(name: &str) -> Option<Inline> {
        let len = *InlineLen::ALL.get(name.len())?;
        let mut bytes = [0; INLINE_CAP];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Some(Inline { bytes, len })
    }

    fn as_str(&self) -> &str {
        let bytes = &self.bytes[..self.len as usize];
        // SAFETY: `bytes` is a copy of a `str`'s bytes, made in `new` and never changed (the
        // module's invariants), so it is valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    }
}

/// A name: inline up to [`INLINE_CAP`] bytes, shared beyond. Built only by [`Name::new`], which
/// keeps the module's invariants (the representation is private to this module).
#[derive(Clone)]
pub(super) struct Name(Repr);

#[derive(Clone)]
enum Repr {
    Inline(Inline),
    Shared(Arc<str>),
}

const _: () = assert!(std::mem::size_of::<Name>() == 24);

impl Name {
    pub(super) fn new(name: &str) -> Name {
        match Inline::new(name) {
            Some(inline) => Name(Repr::Inline(inline)),
            None => Name(Repr::Shared(Arc::from(name))),
        }
    }

    pub(super) fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(inline) => inline.as_str(),
            Repr::Shared(shared) => shared,
        }
    }

    /// Whether clones share a reference count.
    #[cfg(test)]
    pub(super) fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Shared(_))
    }
}

impl PartialEq for Name {
    #[inline]
    fn eq(&self, other: &Name) -> bool {
        match (&self.0, &other.0) {
            (Repr::Inline(a), Repr::Inline(b)) => a == b,
            (Repr::Shared(a), Repr::Shared(b)) => Arc::ptr_eq(a, b) || a == b,
            // A name is inline exactly when it fits (the module's invariants).
            _ => false,
        }
    }
}

impl Eq for Name {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_up_to_the_cap_are_inline_and_longer_ones_shared() {
        for len in 0..=INLINE_CAP + 2 {
            let text = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let name = Name::new(&text);
            assert_eq!(name.as_str(), text);
            assert_eq!(name.is_shared(), text.len() > INLINE_CAP, "{text:?}");
            assert!(Name::new(&text) == name);
        }
    }

    #[test]
    fn equality_is_the_strings_equality() {
        let names = [
            "",
            "a",
            "b",
            "ab",
            "room:1",
            "room:10",
            &"x".repeat(23),
            &"x".repeat(24),
        ];
        for a in names {
            for b in names {
                assert_eq!(Name::new(a) == Name::new(b), a == b, "{a:?} vs {b:?}");
            }
        }
        // Two allocations of one long name are equal; so are a name and its clone.
        let long = "y".repeat(40);
        let (one, two) = (Name::new(&long), Name::new(&long));
        assert!(one == two && one.clone() == one);
    }

    #[test]
    fn a_clone_of_a_long_name_shares_its_allocation() {
        let name = Name::new(&"z".repeat(30));
        let Repr::Shared(original) = &name.0 else {
            panic!("not shared")
        };
        let clone = name.clone();
        let Repr::Shared(copy) = &clone.0 else {
            panic!("not shared")
        };
        assert!(Arc::ptr_eq(original, copy));
        assert_eq!(Arc::strong_count(original), 2);
    }
}
