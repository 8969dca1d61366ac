//! Access-token verification on one thread: `TokenKeys::verify` (header, kid lookup, Ed25519
//! signature, issuer, audience, lifetime) on a token as the server issues it.

use std::time::Instant;

use sealsync_auth::jwt::{AUDIENCE, AccessClaims, TOKEN_LIFETIME_SECS, TokenKeys, now_secs};
use sealsync_crypto::KeyBytes;

const COUNT: u32 = 100_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer = "https://sealsync.bench";
    let keys = TokenKeys::from_seeds(issuer, vec![(1, KeyBytes::generate()?, now_secs())])?;
    let now = now_secs();
    let token = keys.sign(&AccessClaims {
        iss: issuer.into(),
        aud: AUDIENCE.into(),
        sub: "ssc_00000000000000000000000000000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".into(),
        ws: "00000000-0000-4000-8000-000000000001".into(),
        scope: "contacts:read contacts:write runs:read".into(),
        iat: now,
        exp: now + TOKEN_LIFETIME_SECS,
        jti: "2b7e151628aed2a6abf7158809cf4f3c".into(),
    })?;
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..COUNT {
            let claims = keys.verify(std::hint::black_box(&token))?;
            std::hint::black_box(claims);
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    // The floor: the Ed25519 signature check alone, from the same library, on the same bytes.
    let pair = aws_lc_rs::signature::Ed25519KeyPair::generate()?;
    let (signing_input, _) = token.rsplit_once('.').ok_or("token")?;
    let sig = pair.sign(signing_input.as_bytes());
    let public = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ED25519,
        aws_lc_rs::signature::KeyPair::public_key(&pair)
            .as_ref()
            .to_vec(),
    );
    let mut raw = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..COUNT {
            public
                .verify(std::hint::black_box(signing_input.as_bytes()), sig.as_ref())
                .map_err(|_| "signature")?;
        }
        raw = raw.min(start.elapsed().as_secs_f64());
    }
    println!(
        "jwt: Ed25519 signature check alone (aws-lc-rs, same bytes): {:.0} verifications/s",
        f64::from(COUNT) / raw
    );
    // The same check by ed25519-dalek (curve25519-dalek picks its AVX2 backend at run time).
    let dalek_key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let dalek_sig = ed25519_dalek::Signer::sign(&dalek_key, signing_input.as_bytes());
    let dalek_public = dalek_key.verifying_key();
    let mut dalek = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..COUNT {
            ed25519_dalek::Verifier::verify(
                &dalek_public,
                std::hint::black_box(signing_input.as_bytes()),
                &dalek_sig,
            )
            .map_err(|_| "signature")?;
        }
        dalek = dalek.min(start.elapsed().as_secs_f64());
    }
    println!(
        "jwt: Ed25519 signature check alone (ed25519-dalek, same bytes): {:.0} verifications/s",
        f64::from(COUNT) / dalek
    );
    println!(
        "jwt: {COUNT} verifications of a {}-byte EdDSA token on one thread, best of 3: {:.3} s, {:.0} verifications/s  (target >= 30000/s per core)",
        token.len(),
        best,
        f64::from(COUNT) / best
    );
    Ok(())
}
