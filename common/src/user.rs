//! The userspace side of the shared types (feature `user`): `aya::Pod` for the map values and
//! records, and decoding of what the kernel wrote (records read from byte buffers, NUL-padded
//! C strings).

use std::{borrow::Cow, string::String};

use crate::{
    DaemonState, Event, ExeKey, Ghost, KernelLayout, LeaveKey, Reaped, ServiceRecord, ServiceStats, Tag,
    TaskSnapshot,
};

// SAFETY: all of these are #[repr(C)] structs of integers and byte arrays, with no implicit
// padding (fields are laid out in 8-byte groups), valid for any bit pattern.
unsafe impl aya::Pod for Tag {}
unsafe impl aya::Pod for ServiceRecord {}
unsafe impl aya::Pod for Event {}
unsafe impl aya::Pod for KernelLayout {}
unsafe impl aya::Pod for Ghost {}
unsafe impl aya::Pod for TaskSnapshot {}
unsafe impl aya::Pod for ServiceStats {}
unsafe impl aya::Pod for ExeKey {}
unsafe impl aya::Pod for DaemonState {}
unsafe impl aya::Pod for LeaveKey {}
unsafe impl aya::Pod for Reaped {}

/// Reads a record of type `T` from the start of `bytes` (which need not be aligned); None
/// when `bytes` is shorter than a record.
pub fn read_record<T: aya::Pod>(bytes: &[u8]) -> Option<T> {
    let bytes = bytes.get(..core::mem::size_of::<T>())?;
    // SAFETY: the length was checked, and a Pod type is valid for any bit pattern.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The bytes of a NUL-terminated (or NUL-padded) C string buffer, up to the first NUL.
pub fn c_bytes(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    &buf[..end]
}

/// A C string buffer as text, invalid UTF-8 replaced by U+FFFD.
pub fn c_str(buf: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(c_bytes(buf))
}

/// Writes `text` into a C string buffer, NUL-padded, cut at a character boundary so that at
/// least one NUL ends it.
pub fn set_c_str(buf: &mut [u8], text: &str) {
    buf.fill(0);
    let mut n = text.len().min(buf.len().saturating_sub(1));
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    buf[..n].copy_from_slice(&text.as_bytes()[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_strings_stop_at_the_first_nul() {
        assert_eq!(c_bytes(b"sh\0\0x"), b"sh");
        assert_eq!(c_bytes(b"full"), b"full");
        assert_eq!(c_str(b"a\xffb\0"), "a\u{FFFD}b");
        let mut buf = [b'x'; 4];
        set_c_str(&mut buf, "é-é");
        assert_eq!(c_str(&buf), "é-", "cut at a character boundary, NUL-terminated");
        set_c_str(&mut buf, "");
        assert_eq!(buf, [0; 4]);
    }

    #[test]
    fn short_records_are_refused() {
        let tag = Tag {
            service_id: 7,
            ..Tag::default()
        };
        // SAFETY: Tag is plain data.
        let bytes = unsafe {
            core::slice::from_raw_parts((&tag as *const Tag).cast::<u8>(), core::mem::size_of::<Tag>())
        };
        assert_eq!(read_record::<Tag>(bytes).map(|t| t.service_id), Some(7));
        assert!(read_record::<Tag>(&bytes[1..]).is_none());
    }
}
