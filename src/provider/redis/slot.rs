//! Redis Cluster's hash slots: which of the 16,384 slots a channel belongs to, computed as the
//! server does (CRC16-XMODEM of the name, or of its hash tag, modulo 16,384). The provider adds
//! no hash tags: a topic's slot is its own; a topic that contains a `{…}` tag lands where the
//! tag says, as it would for any Redis client.

/// The number of hash slots.
pub(crate) const SLOTS: u16 = 16384;

/// The slot of `name`: of its hash tag, if it has one (the bytes between the first `{` and the
/// first `}` after it, when there are any), else of the whole name.
pub(crate) fn slot(name: &[u8]) -> u16 {
    let hashed = match name.iter().position(|&byte| byte == b'{') {
        Some(open) => match name[open + 1..].iter().position(|&byte| byte == b'}') {
            Some(len) if len > 0 => &name[open + 1..open + 1 + len],
            _ => name,
        },
        None => name,
    };
    crc16(hashed) % SLOTS
}

/// CRC16-XMODEM (polynomial 0x1021, initial value 0), bit by bit: a slot is computed once per
/// channel per batch, next to a network write.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_the_servers() {
        // Values from `CLUSTER KEYSLOT` and the cluster specification.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"somekey"), 11058);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"foo{}{bar}"), slot(b"foo{}{bar}"));
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
        assert_eq!(slot(b""), 0);
    }
}
