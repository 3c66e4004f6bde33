//! Trace and span ids as the bytes OTLP carries. They become lowercase hex only where text is
//! stored, straight into the destination buffer: a hex `String` per id was a measurable share of
//! ingest cost.

use std::fmt;

/// A 16-byte trace id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpanId(pub [u8; 8]);

/// Lowercase hex of `bytes` written into `buf` (which must be twice as long).
fn hex_into<'a>(bytes: &[u8], buf: &'a mut [u8]) -> &'a str {
    /// Both digits of every byte, so each byte is one lookup and one two-byte store.
    const PAIRS: [[u8; 2]; 256] = {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
            i += 1;
        }
        t
    };
    let out = &mut buf[..2 * bytes.len()];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&PAIRS[usize::from(*b)]);
    }
    // SAFETY: every byte of `out` was just written with an ASCII digit, and ASCII is UTF-8.
    unsafe { std::str::from_utf8_unchecked(out) }
}

impl TraceId {
    /// The id as 32 lowercase hex digits, written into `buf`.
    pub fn hex<'a>(&self, buf: &'a mut [u8; 32]) -> &'a str {
        hex_into(&self.0, buf)
    }
}

impl SpanId {
    /// The id as 16 lowercase hex digits, written into `buf`.
    pub fn hex<'a>(&self, buf: &'a mut [u8; 16]) -> &'a str {
        hex_into(&self.0, buf)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex(&mut [0; 32]))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex(&mut [0; 16]))
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_full_width() {
        let t = TraceId([0xab; 16]);
        assert_eq!(t.to_string(), "ab".repeat(16));
        let s = SpanId([0, 1, 2, 3, 0xfe, 0xdc, 0xba, 0x98]);
        assert_eq!(s.to_string(), "00010203fedcba98");
    }
}
