//! A stable content hash for change detection.
//!
//! The hash covers every property except `REV` and `PRODID` (which change when nothing the user
//! sees did), over the canonical model, sorted: folding, line endings, dialect and property order
//! do not change it.

use std::fmt;

use aws_lc_rs::digest;

use crate::model::{Contact, Property};

/// SHA-256 over a contact's canonical form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub fn of(contact: &Contact) -> Self {
        let mut props: Vec<&Property> = contact
            .properties()
            .iter()
            .filter(|p| p.name != "REV" && p.name != "PRODID")
            .collect();
        // A total order over everything hashed, so property order cannot matter.
        props.sort_unstable_by(|a, b| {
            (
                &a.name,
                a.group.as_deref().map(str::to_ascii_lowercase),
                &a.params,
                &a.value,
            )
                .cmp(&(
                    &b.name,
                    b.group.as_deref().map(str::to_ascii_lowercase),
                    &b.params,
                    &b.value,
                ))
        });
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(b"sealsync content v1");
        // Length prefixes and separators keep fields from running together.
        let field = |ctx: &mut digest::Context, tag: u8, bytes: &[u8]| {
            ctx.update(&[tag]);
            ctx.update(&(bytes.len() as u64).to_le_bytes());
            ctx.update(bytes);
        };
        for p in props {
            field(
                &mut ctx,
                1,
                p.group
                    .as_deref()
                    .unwrap_or("")
                    .to_ascii_lowercase()
                    .as_bytes(),
            );
            field(&mut ctx, 2, p.name.as_bytes());
            for param in &p.params {
                field(&mut ctx, 3, param.name.as_bytes());
                for v in &param.values {
                    field(&mut ctx, 4, v.as_bytes());
                }
            }
            field(&mut ctx, 5, p.value.as_bytes());
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        Self(out)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", &self.to_hex()[..16])
    }
}
