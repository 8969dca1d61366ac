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
    pub(crate) fn aad(&self, key_version: u32) -> Aad {
        let mut aad = Aad {
            inline: [0; AAD_INLINE],
            len: 0,
            spilled: Vec::new(),
        };
        aad.push(b"sealsync-aad-v1");
        for part in [self.table.as_bytes(), self.record, self.field.as_bytes()] {
            aad.push(&(part.len() as u32).to_be_bytes());
            aad.push(part);
        }
        aad.push(self.workspace.as_bytes());
        aad.push(&key_version.to_be_bytes());
        aad
    }
}

const AAD_INLINE: usize = 160;

/// An AAD built on the stack when it fits (it nearly always does): sealing is hot.
pub(crate) struct Aad {
    inline: [u8; AAD_INLINE],
    len: usize,
    spilled: Vec<u8>,
}

impl Aad {
    fn push(&mut self, bytes: &[u8]) {
        if self.spilled.is_empty() && self.len + bytes.len() <= AAD_INLINE {
            self.inline[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        } else {
            if self.spilled.is_empty() {
                self.spilled.extend_from_slice(&self.inline[..self.len]);
            }
            self.spilled.extend_from_slice(bytes);
        }
    }
}

impl AsRef<[u8]> for Aad {
    fn as_ref(&self) -> &[u8] {
        if self.spilled.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spilled
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
