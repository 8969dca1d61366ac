//! Access-token verification on one thread: `TokenKeys::verify` (header, kid lookup, Ed25519
//! signature, issuer, audience, lifetime) on a token as the server issues it.

use std::time::Instant;

use sealsync_auth::jwt::{AUDIENCE, AccessClaims, TOKEN_LIFETIME_SECS, TokenKeys, now_secs};
use sealsync_crypto::KeyBytes;

const COUNT: u32 = 200_000;

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
    println!(
        "jwt: {COUNT} verifications of a {}-byte EdDSA token on one thread, best of 3: {:.3} s, {:.0} verifications/s  (target >= 30000/s per core)",
        token.len(),
        best,
        f64::from(COUNT) / best
    );
    Ok(())
}
