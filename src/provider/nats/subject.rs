//! How a topic names its NATS subject: the prefix, a dot, and the topic as one escaped token.
//!
//! NATS gives `.` (token separator), `*` and `>` (wildcards) and whitespace (argument
//! separator) meaning in a subject. The topic's token keeps every printable ASCII byte
//! (`!` to `~`) as it is, except `.`, `*`, `>` and `%`, and writes those and every other byte
//! (space, tab, CR, LF, DEL, control bytes, the bytes of non-ASCII characters) as `%XX`, two
//! upper-case hex digits. So:
//!
//! - the token is never empty (topics are not), never holds a separator or a wildcard, and so
//!   is exactly one literal token after the prefix: no topic can subscribe to another's
//!   messages, or to a subject outside the prefix (`$SYS.x` becomes `<prefix>.$SYS%2Ex`);
//! - the mapping is injective, because `%` itself is escaped: two topics never share a
//!   subject. Receivers still check the envelope's topic against the subject
//!   ([`SubjectNames::carries`]).
//!
//! A token is at most three times the topic's length; the provider checks at construction that
//! the longest topic's commands fit the server's control-line limit.

use crate::config::ConfigError;

/// The default subject prefix.
pub const DEFAULT_SUBJECT_PREFIX: &str = "fanout";

/// Names the subjects of one prefix.
#[derive(Debug, Clone)]
pub(crate) struct SubjectNames {
    prefix: String,
}

/// Whether `byte` is written as `%XX` in a token.
fn escaped(byte: u8) -> bool {
    !matches!(byte, b'!'..=b'~') || matches!(byte, b'.' | b'*' | b'>' | b'%')
}

impl SubjectNames {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// The subject that carries `topic`.
    pub(crate) fn subject(&self, topic: &str) -> String {
        let mut subject = String::with_capacity(self.prefix.len() + 1 + topic.len());
        // Every byte `encode` yields is ASCII, so each is the one char it stands for.
        self.encode(topic, |byte| subject.push(char::from(byte)));
        subject
    }

    /// Appends the subject that carries `topic` to `out`, for a command line: the same bytes
    /// as [`subject`](Self::subject), each run of bytes kept as they are copied at once.
    pub(crate) fn push_subject(&self, out: &mut Vec<u8>, topic: &str) {
        let topic = topic.as_bytes();
        out.reserve(self.prefix.len() + 1 + topic.len());
        out.extend_from_slice(self.prefix.as_bytes());
        out.push(b'.');
        // Where the run of bytes written as they are begins.
        let mut kept = 0;
        for (at, &byte) in topic.iter().enumerate() {
            if escaped(byte) {
                out.extend_from_slice(&topic[kept..at]);
                out.extend_from_slice(&percent(byte));
                kept = at + 1;
            }
        }
        out.extend_from_slice(&topic[kept..]);
    }

    /// Yields the bytes of `topic`'s subject, all printable ASCII, to `push`.
    fn encode(&self, topic: &str, mut push: impl FnMut(u8)) {
        self.prefix.bytes().for_each(&mut push);
        push(b'.');
        for &byte in topic.as_bytes() {
            if escaped(byte) {
                percent(byte).into_iter().for_each(&mut push);
            } else {
                push(byte);
            }
        }
    }

    /// Whether `subject` is the subject of `topic`.
    pub(crate) fn carries(&self, subject: &str, topic: &str) -> bool {
        let Some(token) = subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('.'))
        else {
            return false;
        };
        let mut token = token.as_bytes();
        for &byte in topic.as_bytes() {
            let width = if escaped(byte) { 3 } else { 1 };
            let Some((head, rest)) = token.split_at_checked(width) else {
                return false;
            };
            let matches = if width == 1 {
                head[0] == byte
            } else {
                head[0] == b'%' && hex_value(head[1], head[2]) == Some(byte)
            };
            if !matches {
                return false;
            }
            token = rest;
        }
        token.is_empty()
    }

    /// The longest subject a topic of `max_topic_bytes` bytes can have.
    pub(crate) fn longest(&self, max_topic_bytes: usize) -> usize {
        self.prefix
            .len()
            .saturating_add(1)
            .saturating_add(max_topic_bytes.saturating_mul(3))
    }
}

/// `byte` written as `%XY`, upper-case hex.
fn percent(byte: u8) -> [u8; 3] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    [b'%', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]]
}

/// The byte `%XY` stands for, upper-case hex only (the only form [`SubjectNames::subject`]
/// writes).
fn hex_value(high: u8, low: u8) -> Option<u8> {
    let digit = |byte: u8| match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    };
    Some(digit(high)? << 4 | digit(low)?)
}

/// Checks a subject prefix: one or more non-empty tokens separated by `.`, of printable ASCII
/// without `*` and `>`, so that a prefix is never a wildcard.
pub(crate) fn check_prefix(prefix: &str) -> Result<(), ConfigError> {
    let bad = prefix.is_empty()
        || prefix.split('.').any(|token| {
            token.is_empty()
                || token
                    .bytes()
                    .any(|byte| !matches!(byte, b'!'..=b'~') || matches!(byte, b'*' | b'>'))
        });
    if bad {
        return Err(ConfigError::at_key(
            "nats.subject_prefix",
            format!(
                "is {prefix:?}; it must be one or more non-empty tokens separated by `.`, of printable ASCII without `*` or `>`"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_topics_are_one_literal_token() {
        let names = SubjectNames::new("app.pubsub");
        let cases = [
            ("room:1", "app.pubsub.room:1"),
            ("a.b", "app.pubsub.a%2Eb"),
            ("a.*", "app.pubsub.a%2E%2A"),
            ("a.>", "app.pubsub.a%2E%3E"),
            (">", "app.pubsub.%3E"),
            (" ", "app.pubsub.%20"),
            ("a b\tc\r\nd\x7f", "app.pubsub.a%20b%09c%0D%0Ad%7F"),
            ("$SYS.x", "app.pubsub.$SYS%2Ex"),
            ("_INBOX.x", "app.pubsub._INBOX%2Ex"),
            ("100%", "app.pubsub.100%25"),
            ("é", "app.pubsub.%C3%A9"),
        ];
        for (topic, subject) in cases {
            assert_eq!(names.subject(topic), subject, "{topic:?}");
            let mut pushed = b"PUB ".to_vec();
            names.push_subject(&mut pushed, topic);
            assert_eq!(pushed, format!("PUB {subject}").into_bytes());
            assert!(names.carries(subject, topic), "{topic:?}");
        }
    }

    #[test]
    fn carries_only_the_topics_own_subject() {
        let names = SubjectNames::new("p");
        let topics = ["a", "a.b", "a%2Eb", "a%", "%", "ab", "a b", "é", "a.", "."];
        for topic in topics {
            for other in topics {
                let subject = names.subject(other);
                assert_eq!(
                    names.carries(&subject, topic),
                    topic == other,
                    "{topic:?} on {subject:?}"
                );
            }
        }
        assert!(!names.carries("q.a", "a"));
        assert!(!names.carries("pa", "a"));
        assert!(!names.carries("p.a%2eb", "a.b"), "lower-case hex is not ours");
        assert!(!names.carries("p.%", "%"));
    }

    #[test]
    fn a_command_line_gets_the_same_subject() {
        let names = SubjectNames::new("p.q");
        let all: String = (0..=127u8).map(char::from).chain(['é', '€']).collect();
        for topic in [
            "a",
            "a.b",
            "%",
            "a b",
            "é",
            "x.*.>",
            "plain:topic-1",
            all.as_str(),
        ] {
            let mut line = b"PUB ".to_vec();
            names.push_subject(&mut line, topic);
            assert_eq!(&line[4..], names.subject(topic).as_bytes(), "{topic:?}");
        }
    }

    #[test]
    fn every_byte_maps_injectively_and_never_to_a_separator_or_wildcard() {
        let names = SubjectNames::new("p");
        let mut seen = std::collections::HashSet::new();
        for byte in 0..=127u8 {
            let topic = char::from(byte).to_string();
            let subject = names.subject(&topic);
            let token = &subject[2..];
            assert!(!token.contains(['.', '*', '>', ' ', '\t', '\r', '\n']), "{byte}");
            assert!(token.bytes().all(|b| b.is_ascii_graphic()), "{byte}");
            assert!(seen.insert(subject), "{byte}");
        }
        assert_eq!(names.longest(10), 1 + 1 + 30);
    }

    #[test]
    fn prefixes_are_plain_tokens() {
        for good in ["fanout", "app.pubsub", "t:1:2:", "$APP"] {
            assert!(check_prefix(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "a.", ".a", "a..b", "a.*", ">", "a b", "é"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
