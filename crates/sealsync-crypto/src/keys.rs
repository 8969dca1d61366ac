//! Per-workspace keys: versioned data keys and the blind-index key.

use std::collections::BTreeMap;
use std::fmt;

use std::cell::RefCell;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac};
use sealsync_types::WorkspaceId;
use zeroize::Zeroizing;

use crate::seal::{
    CryptoError, HEADER_LEN, NONCE_LEN, RecordRef, SEALED_V1, TAG_LEN, sealed_key_version,
};

/// 32 bytes of key material, zeroized on drop. Not `Clone`; `Debug` prints a marker.
pub struct KeyBytes(Zeroizing<[u8; 32]>);

impl KeyBytes {
    /// Fresh random key material.
    pub fn generate() -> Result<Self, CryptoError> {
        let mut k = Zeroizing::new([0u8; 32]);
        crate::random_bytes(&mut k[..])?;
        Ok(Self(k))
    }

    pub fn from_slice(bytes: &[u8]) -> Result<Self, CryptoError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::KeyLength)?;
        Ok(Self(Zeroizing::new(arr)))
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for KeyBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyBytes(<redacted>)")
    }
}

/// What a blind index is over; each kind has its own key, so equal strings of different kinds
/// never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IndexKind {
    Email = 0,
    Phone = 1,
    Uid = 2,
    /// Over a contact's content hash: change detection without a plaintext fingerprint.
    Content = 3,
    /// Over a link and a remote item id: link state without the ids themselves.
    Remote = 4,
}

impl IndexKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IndexKind::Email => "email",
            IndexKind::Phone => "phone",
            IndexKind::Uid => "uid",
            IndexKind::Content => "content",
            IndexKind::Remote => "remote",
        }
    }

    /// Every kind, in the order of their codes (`kind as u8`).
    pub const ALL: [IndexKind; 5] = [
        IndexKind::Email,
        IndexKind::Phone,
        IndexKind::Uid,
        IndexKind::Content,
        IndexKind::Remote,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind whose code (`kind as u8`) is `code`.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }
}

/// HMAC-SHA256 under a per-workspace key derived with HKDF from the workspace's index root.
pub struct BlindIndex {
    /// Indexed by `IndexKind as usize`.
    keys: [hmac::Key; 5],
    /// Secret prefix of [`BlindIndex::member`] hashes.
    member_prefix: Zeroizing<[u8; 32]>,
}

/// An order-free digest of a set: the lane-wise sum of its members' keyed hashes
/// ([`BlindIndex::member`]) and their number. Members are added and removed in any order, so a
/// set's digest can follow changes to it without the set itself. The hashes are keyed, so
/// nobody without the workspace's keys can choose members that sum to a given digest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SetSum {
    lanes: [u64; 4],
    count: u64,
}

impl SetSum {
    fn lanes(h: &[u8; 32]) -> impl Iterator<Item = u64> + '_ {
        h.chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
    }

    pub fn add(&mut self, member: &[u8; 32]) {
        for (lane, v) in self.lanes.iter_mut().zip(Self::lanes(member)) {
            *lane = lane.wrapping_add(v);
        }
        self.count += 1;
    }

    pub fn remove(&mut self, member: &[u8; 32]) {
        for (lane, v) in self.lanes.iter_mut().zip(Self::lanes(member)) {
            *lane = lane.wrapping_sub(v);
        }
        self.count = self.count.wrapping_sub(1);
    }

    /// How many members the set has.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn to_bytes(self) -> [u8; 40] {
        let mut out = [0u8; 40];
        for (chunk, v) in out
            .chunks_exact_mut(8)
            .zip(self.lanes.iter().chain([&self.count]))
        {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        out
    }
}

impl BlindIndex {
    pub fn new(root: &KeyBytes, workspace: WorkspaceId) -> Self {
        let prk =
            hkdf::Salt::new(hkdf::HKDF_SHA256, b"sealsync blind index v1").extract(root.expose());
        let derive = |kind: IndexKind| -> hmac::Key {
            let info = [kind.as_str().as_bytes(), workspace.as_bytes().as_slice()];
            match prk.expand(&info, hmac::HMAC_SHA256) {
                Ok(okm) => hmac::Key::from(okm),
                // Unreachable: 32 bytes is far below HKDF-SHA256's output limit.
                Err(_) => hmac::Key::new(hmac::HMAC_SHA256, root.expose()),
            }
        };
        let mut member_prefix = Zeroizing::new([0u8; 32]);
        let info = [b"set member".as_slice(), workspace.as_bytes().as_slice()];
        if prk
            .expand(&info, hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut member_prefix[..]))
            .is_err()
        {
            // Unreachable, as above.
            member_prefix.copy_from_slice(root.expose());
        }
        Self {
            keys: [
                derive(IndexKind::Email),
                derive(IndexKind::Phone),
                derive(IndexKind::Uid),
                derive(IndexKind::Content),
                derive(IndexKind::Remote),
            ],
            member_prefix,
        }
    }

    /// A keyed hash of the pair (`a`, `b`) as a member of a [`SetSum`]: SHA-256 over a secret
    /// prefix and the pair. Cheaper than an HMAC (one hash, not two) for digests of large sets;
    /// never stored on its own.
    pub fn member(&self, a: &[u8], b: &[u8]) -> [u8; 32] {
        use aws_lc_rs::digest;
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&self.member_prefix[..]);
        ctx.update(&(a.len() as u64).to_le_bytes());
        ctx.update(a);
        ctx.update(b);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }

    /// The index value for an already normalized key.
    pub fn index(&self, kind: IndexKind, normalized: &str) -> [u8; 32] {
        let tag = hmac::sign(&self.keys[kind as usize], normalized.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

impl fmt::Debug for BlindIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlindIndex(<redacted>)")
    }
}

struct DataKey {
    aead: LessSafeKey,
}

/// Random 96-bit nonces drawn from the system CSPRNG in blocks: one generator call per 512
/// nonces instead of one per value (the call, not the bytes, is what costs). Nonces are public
/// (they are stored beside the ciphertext); only their uniqueness matters, and 96 random bits
/// per value keep collisions negligible far beyond any workspace's size.
struct NoncePool {
    buf: [u8; NONCE_LEN * 512],
    pos: usize,
}

impl NoncePool {
    const fn new() -> Self {
        Self {
            buf: [0; NONCE_LEN * 512],
            pos: NONCE_LEN * 512,
        }
    }

    #[inline]
    fn next(&mut self) -> Result<[u8; NONCE_LEN], CryptoError> {
        if self.pos == self.buf.len() {
            crate::random_bytes(&mut self.buf)?;
            self.pos = 0;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&self.buf[self.pos..self.pos + NONCE_LEN]);
        // Never hand out the same bytes twice.
        self.buf[self.pos..self.pos + NONCE_LEN].fill(0);
        self.pos += NONCE_LEN;
        Ok(nonce)
    }
}

thread_local! {
    /// One pool per thread: nonces are random, not tied to a key, so sharing them across keys
    /// loses nothing, and sealing on several threads takes no lock.
    static NONCES: RefCell<NoncePool> = const { RefCell::new(NoncePool::new()) };
}

#[inline]
fn next_nonce() -> Result<[u8; NONCE_LEN], CryptoError> {
    NONCES.with(|pool| {
        pool.try_borrow_mut()
            .map_err(|_| CryptoError::Random)?
            .next()
    })
}

/// The unwrapped keys of one workspace: every live DEK version and the blind index.
pub struct WorkspaceKeys {
    workspace: WorkspaceId,
    deks: BTreeMap<u32, DataKey>,
    current: u32,
    blind: BlindIndex,
}

impl WorkspaceKeys {
    /// Keys from unwrapped material: `(version, key)` pairs and the index root. The highest
    /// version seals new values.
    pub fn new(
        workspace: WorkspaceId,
        deks: Vec<(u32, KeyBytes)>,
        index_root: &KeyBytes,
    ) -> Result<Self, CryptoError> {
        let mut map = BTreeMap::new();
        for (version, key) in deks {
            let aead = LessSafeKey::new(
                UnboundKey::new(&AES_256_GCM, key.expose()).map_err(|_| CryptoError::KeyLength)?,
            );
            map.insert(version, DataKey { aead });
        }
        let current = *map
            .keys()
            .next_back()
            .ok_or(CryptoError::UnknownKeyVersion(0))?;
        Ok(Self {
            workspace,
            deks: map,
            current,
            blind: BlindIndex::new(index_root, workspace),
        })
    }

    pub fn workspace(&self) -> WorkspaceId {
        self.workspace
    }

    /// The DEK version new values are sealed with.
    pub fn current_version(&self) -> u32 {
        self.current
    }

    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.deks.keys().copied()
    }

    pub fn blind_index(&self) -> &BlindIndex {
        &self.blind
    }

    /// Seals `plaintext` for `at` under the newest DEK.
    pub fn seal(&self, at: &RecordRef<'_>, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.seal_with(self.current, at, plaintext)
    }

    /// [`WorkspaceKeys::seal`], appending the sealed value to `out`: a caller sealing many
    /// values into one buffer saves an allocation each.
    pub fn seal_into(
        &self,
        at: &RecordRef<'_>,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        self.seal_into_with(self.current, at, plaintext, out)
    }

    pub(crate) fn seal_with(
        &self,
        version: u32,
        at: &RecordRef<'_>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
        self.seal_into_with(version, at, plaintext, &mut out)?;
        Ok(out)
    }

    fn seal_into_with(
        &self,
        version: u32,
        at: &RecordRef<'_>,
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CryptoError> {
        debug_assert_eq!(at.workspace, self.workspace);
        let key = self
            .deks
            .get(&version)
            .ok_or(CryptoError::UnknownKeyVersion(version))?;
        let aad = at.aad(version);
        let nonce = next_nonce()?;
        let start = out.len();
        out.reserve(HEADER_LEN + plaintext.len() + TAG_LEN);
        out.push(SEALED_V1);
        out.extend_from_slice(&version.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        match key.aead.seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad.as_ref()),
            &mut out[start + HEADER_LEN..],
        ) {
            Ok(tag) => {
                out.extend_from_slice(tag.as_ref());
                Ok(())
            }
            Err(_) => {
                // Never leave plaintext behind in the caller's buffer.
                out[start..].fill(0);
                out.truncate(start);
                Err(CryptoError::Random)
            }
        }
    }

    /// Opens a value sealed for `at`. Fails with [`CryptoError::Integrity`] if it was altered or
    /// sealed for another place.
    pub fn open(&self, at: &RecordRef<'_>, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut buf = Vec::new();
        self.open_into(at, sealed, &mut buf)?;
        Ok(buf)
    }

    /// [`WorkspaceKeys::open`] into `buf` (cleared first), so that a caller opening many values
    /// reuses one allocation. The caller owns zeroizing `buf`.
    pub fn open_into<'b>(
        &self,
        at: &RecordRef<'_>,
        sealed: &[u8],
        buf: &'b mut Vec<u8>,
    ) -> Result<&'b [u8], CryptoError> {
        buf.clear();
        let version = sealed_key_version(sealed)?;
        let key = self
            .deks
            .get(&version)
            .ok_or(CryptoError::UnknownKeyVersion(version))?;
        if at.workspace != self.workspace {
            return Err(CryptoError::Integrity);
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[5..HEADER_LEN])
            .map_err(|_| CryptoError::Malformed)?;
        buf.extend_from_slice(&sealed[HEADER_LEN..]);
        let len = match key
            .aead
            .open_in_place(nonce, Aad::from(at.aad(version).as_ref()), buf)
        {
            Ok(plain) => plain.len(),
            Err(_) => {
                buf.clear();
                return Err(CryptoError::Integrity);
            }
        };
        buf.truncate(len);
        Ok(&buf[..])
    }

    /// Re-seals a value under the newest DEK (for rotation); a value already there is returned
    /// as `None`.
    pub fn reseal(
        &self,
        at: &RecordRef<'_>,
        sealed: &[u8],
    ) -> Result<Option<Vec<u8>>, CryptoError> {
        if sealed_key_version(sealed)? == self.current {
            return Ok(None);
        }
        let plain = Zeroizing::new(self.open(at, sealed)?);
        self.seal(at, &plain).map(Some)
    }
}

impl fmt::Debug for WorkspaceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkspaceKeys")
            .field("workspace", &self.workspace)
            .field("versions", &self.deks.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kind codes are stored in contact rows: each kind keeps its code, and codes map back.
    #[test]
    fn index_kind_codes_are_stable() {
        assert_eq!(
            IndexKind::ALL.map(|k| k as u8),
            [0, 1, 2, 3, 4],
            "a kind's code changed"
        );
        for kind in IndexKind::ALL {
            assert_eq!(IndexKind::from_code(kind as u8), Some(kind));
            assert_eq!(IndexKind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(IndexKind::from_code(5), None);
    }

    fn keys(ws: WorkspaceId, versions: &[u32]) -> (WorkspaceKeys, Vec<[u8; 32]>) {
        let raw: Vec<[u8; 32]> = versions
            .iter()
            .map(|_| *KeyBytes::generate().unwrap().expose())
            .collect();
        let deks = versions
            .iter()
            .zip(&raw)
            .map(|(v, k)| (*v, KeyBytes::from_slice(k).unwrap()))
            .collect();
        (
            WorkspaceKeys::new(ws, deks, &KeyBytes::generate().unwrap()).unwrap(),
            raw,
        )
    }

    fn at<'a>(ws: WorkspaceId, record: &'a [u8], field: &'a str) -> RecordRef<'a> {
        RecordRef {
            table: "contacts",
            workspace: ws,
            record,
            field,
        }
    }

    #[test]
    fn seal_open_round_trip_with_random_nonces() {
        let ws = WorkspaceId::new();
        let (k, _) = keys(ws, &[1]);
        let a = k.seal(&at(ws, b"r1", "body"), b"hello").unwrap();
        let b = k.seal(&at(ws, b"r1", "body"), b"hello").unwrap();
        assert_ne!(a, b, "nonces must differ");
        assert_eq!(a[0], SEALED_V1);
        assert_eq!(a.len(), HEADER_LEN + 5 + TAG_LEN);
        assert_eq!(k.open(&at(ws, b"r1", "body"), &a).unwrap(), b"hello");
    }

    #[test]
    fn seal_into_appends_and_open_into_reuses() {
        let ws = WorkspaceId::new();
        let (k, _) = keys(ws, &[1]);
        let mut out = b"prefix".to_vec();
        k.seal_into(&at(ws, b"r1", "body"), b"hello", &mut out)
            .unwrap();
        assert_eq!(&out[..6], b"prefix");
        let sealed = &out[6..];
        assert_eq!(sealed.len(), HEADER_LEN + 5 + TAG_LEN);
        let mut buf = b"stale plaintext".to_vec();
        assert_eq!(
            k.open_into(&at(ws, b"r1", "body"), sealed, &mut buf)
                .unwrap(),
            b"hello"
        );
        assert_eq!(
            k.open_into(&at(ws, b"r2", "body"), sealed, &mut buf),
            Err(CryptoError::Integrity)
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn moved_or_altered_values_fail() {
        let ws = WorkspaceId::new();
        let (k, _) = keys(ws, &[1]);
        let sealed = k.seal(&at(ws, b"r1", "body"), b"hello").unwrap();
        assert_eq!(
            k.open(&at(ws, b"r2", "body"), &sealed),
            Err(CryptoError::Integrity)
        );
        assert_eq!(
            k.open(&at(ws, b"r1", "note"), &sealed),
            Err(CryptoError::Integrity)
        );
        let other = RecordRef {
            table: "events",
            ..at(ws, b"r1", "body")
        };
        assert_eq!(k.open(&other, &sealed), Err(CryptoError::Integrity));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(
            k.open(&at(ws, b"r1", "body"), &flipped),
            Err(CryptoError::Integrity)
        );
        assert_eq!(
            k.open(&at(ws, b"r1", "body"), &sealed[..10]),
            Err(CryptoError::Malformed)
        );
    }

    #[test]
    fn another_workspace_cannot_open() {
        let ws = WorkspaceId::new();
        let (k, raw) = keys(ws, &[1]);
        let sealed = k.seal(&at(ws, b"r1", "body"), b"hello").unwrap();
        // Same key material, other workspace: the AAD differs.
        let other = WorkspaceId::new();
        let k2 = WorkspaceKeys::new(
            other,
            vec![(1, KeyBytes::from_slice(&raw[0]).unwrap())],
            &KeyBytes::generate().unwrap(),
        )
        .unwrap();
        assert_eq!(
            k2.open(&at(other, b"r1", "body"), &sealed),
            Err(CryptoError::Integrity)
        );
    }

    #[test]
    fn rotation_reseals_under_newest() {
        let ws = WorkspaceId::new();
        let (k, raw) = keys(ws, &[1, 2]);
        let old = k.seal_with(1, &at(ws, b"r", "f"), b"x").unwrap();
        let new = k.reseal(&at(ws, b"r", "f"), &old).unwrap().unwrap();
        assert_eq!(sealed_key_version(&new).unwrap(), 2);
        assert!(k.reseal(&at(ws, b"r", "f"), &new).unwrap().is_none());
        // Without version 1 the old value cannot be opened.
        let only2 = WorkspaceKeys::new(
            ws,
            vec![(2, KeyBytes::from_slice(&raw[1]).unwrap())],
            &KeyBytes::generate().unwrap(),
        )
        .unwrap();
        assert_eq!(
            only2.open(&at(ws, b"r", "f"), &old),
            Err(CryptoError::UnknownKeyVersion(1))
        );
        assert_eq!(only2.open(&at(ws, b"r", "f"), &new).unwrap(), b"x");
    }

    #[test]
    fn blind_index_is_keyed_per_workspace_and_kind() {
        let root = KeyBytes::generate().unwrap();
        let a = BlindIndex::new(&root, WorkspaceId::new());
        let b = BlindIndex::new(&root, WorkspaceId::new());
        let x = a.index(IndexKind::Email, "a@example.com");
        assert_eq!(x, a.index(IndexKind::Email, "a@example.com"));
        assert_ne!(x, b.index(IndexKind::Email, "a@example.com"));
        assert_ne!(x, a.index(IndexKind::Uid, "a@example.com"));
    }

    #[test]
    fn debug_hides_content() {
        let k = KeyBytes::generate().unwrap();
        let shown = format!("{k:?}");
        assert!(shown.contains("redacted"));
        let ws = WorkspaceId::new();
        let (keys, raw) = keys(ws, &[1]);
        let shown = format!("{keys:?}");
        assert!(!shown.contains(&format!("{:?}", raw[0])));
    }
}
