//! The chunk-size line of a chunked response body (RFC 9112 section 7.1), read as hyper's
//! decoder reads it on the other path, so that both paths judge a backend's answer the same:
//! `httparse::parse_chunk_size` takes a line with no digit at all (`\r\n`, `;x\r\n`) as a last
//! chunk, and a bare LF within an extension, where hyper refuses both.
//!
//! `chunk-size [BWS] [";" chunk-ext] CRLF`: one hex digit at least (`chunk-size = 1*HEXDIG`),
//! the size within 64 bits (leading zeros are no limit, as for hyper); spaces and tabs after
//! it; an extension is skipped up to the CR, which must be followed by LF. The extension may
//! hold no control character but HTAB: its grammar (tokens, quoted strings) has none. Hyper
//! refuses only the LF there; the others are refused here too, a little stricter.

/// A chunk-size line that is not one.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Malformed;

/// The chunk-size line at the start of `buf`: its length (CRLF included) and the size, or
/// `None` when the line is not whole yet.
pub(super) fn size_line(buf: &[u8]) -> Result<Option<(usize, u64)>, Malformed> {
    let mut size: u64 = 0;
    let mut i = 0;
    while let Some(&b) = buf.get(i) {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => break,
        };
        size = size
            .checked_mul(16)
            .and_then(|s| s.checked_add(u64::from(digit)))
            .ok_or(Malformed)?;
        i += 1;
    }
    if i == buf.len() {
        return Ok(None);
    }
    if i == 0 {
        return Err(Malformed);
    }
    while matches!(buf.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    if buf.get(i) == Some(&b';') {
        i += 1;
        loop {
            match buf.get(i) {
                None => return Ok(None),
                Some(b'\r') => break,
                Some(&b) if b == b'\t' || (b >= 0x20 && b != 0x7f) => i += 1,
                Some(_) => return Err(Malformed),
            }
        }
    }
    match (buf.get(i), buf.get(i + 1)) {
        (None, _) | (Some(b'\r'), None) => Ok(None),
        (Some(b'\r'), Some(b'\n')) => Ok(Some((i + 2, size))),
        _ => Err(Malformed),
    }
}
