//! A bounds-checked big-endian reader over one message.

use super::DecodeError;

/// Reads fields front to back; every read checks the remaining length first,
/// so malformed input becomes an error, never a panic.
pub(super) struct Cursor<'a> {
    bytes: &'a [u8],
    message: &'static str,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(bytes: &'a [u8], message: &'static str) -> Self {
        Cursor { bytes, message }
    }

    fn truncated(&self, field: &'static str) -> DecodeError {
        DecodeError::Truncated { message: self.message, field }
    }

    pub(super) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub(super) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(self.truncated(field));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub(super) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(super) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    pub(super) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    pub(super) fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    pub(super) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    pub(super) fn i64(&mut self, field: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(field)?))
    }

    /// A NUL-terminated string; Postgres sends identifiers in the database
    /// encoding, which flashsync requires to be UTF-8.
    pub(super) fn cstr(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let end = self.bytes.iter().position(|&b| b == 0).ok_or_else(|| self.truncated(field))?;
        let raw = self.take(end, field)?;
        self.take(1, field)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::Invalid {
            message: self.message,
            field,
            detail: "not valid UTF-8".into(),
        })
    }

    /// Fails unless every byte was consumed.
    pub(super) fn finish(self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes { message: self.message, extra: self.bytes.len() })
        }
    }
}
