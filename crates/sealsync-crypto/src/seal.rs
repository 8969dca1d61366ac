//! The sealed value format and its AAD.

use sealsync_types::WorkspaceId;

/// First byte of every value sealed in format version 1.
pub const SEALED_V1: u8 = 1;
pub(crate) const HEADER_LEN: usize = 1 + 4 + NONCE_LEN;
pub(crate) const NONCE_LEN: usize = 12;
pub(crate) const TAG_LEN: usize = 16;

/// Why sealing or opening failed. Never says anything about the plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("sealed value is malformed (unknown format or truncated)")]
    Malformed,
    #[error("no data key version {0} for this workspace (it was retired or destroyed)")]
    UnknownKeyVersion(u32),
    #[error("integrity check failed: the value was altered or does not belong here")]
    Integrity,
    #[error("the secure random generator failed")]
    Random,
    #[error("key material has the wrong length")]
    KeyLength,
}

/// Where a sealed value lives: the AAD binds it there.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub table: &'a str,
    pub workspace: WorkspaceId,
    pub record: &'a [u8],
    pub field: &'a str,
}

impl RecordRef<'_> {
    /// `"sealsync-aad-v1" | len table | len record | len field | workspace | key version`,
    /// length-prefixed so that no two places share an AAD.
    #[inline]
    pub(crate) fn aad(&self, key_version: u32) -> Aad {
        let parts = [self.table.as_bytes(), self.record, self.field.as_bytes()];
        let len = AAD_PREFIX.len() + parts.iter().map(|p| 4 + p.len()).sum::<usize>() + 16 + 4;
        let mut inline = [0u8; AAD_INLINE];
        let mut spilled = Vec::new();
        let buf: &mut [u8] = if len <= AAD_INLINE {
            &mut inline[..len]
        } else {
            spilled.resize(len, 0);
            &mut spilled
        };
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            buf[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(AAD_PREFIX);
        for part in parts {
            put(&(part.len() as u32).to_be_bytes());
            put(part);
        }
        put(self.workspace.as_bytes());
        put(&key_version.to_be_bytes());
        if spilled.is_empty() {
            Aad::Inline(inline, len)
        } else {
            Aad::Spilled(spilled)
        }
    }
}

const AAD_PREFIX: &[u8] = b"sealsync-aad-v1";
const AAD_INLINE: usize = 128;

/// An AAD built on the stack when it fits (it nearly always does): sealing is hot. Its
/// length is known before the first byte is written, so each part is one copy.
pub(crate) enum Aad {
    Inline([u8; AAD_INLINE], usize),
    Spilled(Vec<u8>),
}

impl AsRef<[u8]> for Aad {
    #[inline]
    fn as_ref(&self) -> &[u8] {
        match self {
            Aad::Inline(bytes, len) => &bytes[..*len],
            Aad::Spilled(bytes) => bytes,
        }
    }
}

/// The key version a sealed value names, without opening it.
pub fn sealed_key_version(sealed: &[u8]) -> Result<u32, CryptoError> {
    if sealed.len() < HEADER_LEN + TAG_LEN || sealed[0] != SEALED_V1 {
        return Err(CryptoError::Malformed);
    }
    Ok(u32::from_be_bytes([
        sealed[1], sealed[2], sealed[3], sealed[4],
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The AAD layout is part of every stored value: it must never change for format v1.
    fn layout(table: &[u8], record: &[u8], field: &[u8], ws: &[u8; 16], version: u32) -> Vec<u8> {
        let mut v = b"sealsync-aad-v1".to_vec();
        for part in [table, record, field] {
            v.extend_from_slice(&(part.len() as u32).to_be_bytes());
            v.extend_from_slice(part);
        }
        v.extend_from_slice(ws);
        v.extend_from_slice(&version.to_be_bytes());
        v
    }

    #[test]
    fn aad_keeps_the_v1_layout_inline_and_spilled() {
        let ws = WorkspaceId::from_bytes([9; 16]);
        for record in [vec![1u8; 16], vec![2u8; 300]] {
            let at = RecordRef {
                table: "contacts",
                workspace: ws,
                record: &record,
                field: "body",
            };
            let aad = at.aad(7);
            assert_eq!(
                aad.as_ref(),
                layout(b"contacts", &record, b"body", &[9; 16], 7).as_slice()
            );
            assert_eq!(matches!(aad, Aad::Spilled(_)), record.len() > 64);
        }
        // Moving bytes between parts changes the AAD.
        let a = RecordRef {
            table: "ab",
            workspace: ws,
            record: b"c",
            field: "f",
        };
        let b = RecordRef {
            table: "a",
            workspace: ws,
            record: b"bc",
            field: "f",
        };
        assert_ne!(a.aad(1).as_ref(), b.aad(1).as_ref());
    }
}
