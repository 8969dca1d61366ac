//! A stable content hash for change detection.
//!
//! The hash covers every property except `REV` and `PRODID` (which change when nothing the user
//! sees did), over the canonical model, sorted: folding, line endings, dialect and property order
//! do not change it.

use std::fmt;

use aws_lc_rs::digest;

use crate::model::Contact;

/// SHA-256 over a contact's canonical form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub fn of(contact: &Contact) -> Self {
        let mut lines: Vec<Vec<u8>> = contact
            .properties()
            .iter()
            .filter(|p| p.name != "REV" && p.name != "PRODID")
            .map(|p| {
                let mut line = Vec::with_capacity(p.value.len() + 32);
                // Unit separators keep fields apart; lengths keep values from running together.
                line.extend_from_slice(
                    p.group
                        .as_deref()
                        .unwrap_or("")
                        .to_ascii_lowercase()
                        .as_bytes(),
                );
                line.push(0x1f);
                line.extend_from_slice(p.name.as_bytes());
                for param in &p.params {
                    line.push(0x1e);
                    line.extend_from_slice(param.name.as_bytes());
                    for v in &param.values {
                        line.push(0x1d);
                        line.extend_from_slice(&(v.len() as u64).to_le_bytes());
                        line.extend_from_slice(v.as_bytes());
                    }
                }
                line.push(0x1f);
                line.extend_from_slice(&(p.value.len() as u64).to_le_bytes());
                line.extend_from_slice(p.value.as_bytes());
                line
            })
            .collect();
        lines.sort_unstable();
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"sealsync content v1");
        for line in &lines {
            ctx.update(&(line.len() as u64).to_le_bytes());
            ctx.update(line);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Self(out)
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", &self.to_hex()[..16])
    }
}
