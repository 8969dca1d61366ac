//! The sealing layer's cost: `WorkspaceKeys::seal` (nonce, AAD, versioned format, allocation)
//! next to bare AES-256-GCM from the same library on the same 1 KiB buffers, in the same run.
//! The bench allocates as the `sealsync` binary does (mimalloc), so the layer's allocation
//! costs here what it costs there.

use std::time::Instant;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use sealsync_crypto::{KeyBytes, RecordRef, WorkspaceKeys};
use sealsync_types::WorkspaceId;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const VALUE: usize = 1024;
const COUNT: usize = 400_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let key = KeyBytes::generate()?;
    // Bare: the AEAD alone, with a counter nonce (no random nonce, no AAD building, no allocation).
    let bare = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.expose()).map_err(|_| "key")?);
    let ws = WorkspaceId::new();
    let keys = WorkspaceKeys::new(
        ws,
        vec![(1, KeyBytes::from_slice(key.expose())?)],
        &KeyBytes::generate()?,
    )?;
    let plain = vec![0x5au8; VALUE];
    let ids: Vec<[u8; 16]> = (0..1024u32)
        .map(|i| {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&i.to_be_bytes());
            b
        })
        .collect();
    let mb = (VALUE * COUNT) as f64 / 1e6;
    // The layer's AAD for these records: 15 + 3 * 4 + 8 + 16 + 4 + 16 + 4 bytes.
    let layer_aad = [0xa5u8; 75];
    let mut best_bare = f64::MAX;
    let mut best_bare_aad = f64::MAX;
    let mut best_layer = f64::MAX;
    let mut sink = 0usize;
    for _ in 0..3 {
        for (aad, best) in [
            (&b"aad"[..], &mut best_bare),
            (&layer_aad[..], &mut best_bare_aad),
        ] {
            let mut buf = plain.clone();
            let start = Instant::now();
            for n in 0..COUNT {
                buf.copy_from_slice(&plain);
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&(n as u64).to_be_bytes());
                let tag = bare
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut buf,
                    )
                    .map_err(|_| "seal")?;
                sink ^= tag.as_ref()[0] as usize;
            }
            *best = best.min(start.elapsed().as_secs_f64());
        }
        let start = Instant::now();
        for i in 0..COUNT {
            let at = RecordRef {
                table: "contacts",
                workspace: ws,
                record: &ids[i % ids.len()],
                field: "body",
            };
            let sealed = keys.seal(&at, &plain)?;
            sink ^= sealed[sealed.len() - 1] as usize;
        }
        best_layer = best_layer.min(start.elapsed().as_secs_f64());
    }
    println!("sealing: {COUNT} values of {VALUE} bytes, best of 3, one thread (checksum {sink})");
    println!(
        "  bare AES-256-GCM (aws-lc-rs):  {:>8.0} MB/s  (3-byte AAD)",
        mb / best_bare
    );
    println!(
        "  bare, the layer's AAD length:  {:>8.0} MB/s  (75-byte AAD)",
        mb / best_bare_aad
    );
    println!(
        "  sealing layer:                 {:>8.0} MB/s  = {:.0}% of bare (target >= 70%); {:.0}% of bare with an AAD as long",
        mb / best_layer,
        100.0 * best_bare / best_layer,
        100.0 * best_bare_aad / best_layer
    );
    Ok(())
}
