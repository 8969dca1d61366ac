//! Key providers hold the key-encryption key (KEK) and wrap / unwrap data keys with it.
//!
//! The local keyfile is the default: a text file, mode 0600, one line per KEK version. The
//! environment provider takes the same key from `SEALSYNC_MASTER_KEY`. A KMS provider implements
//! the same trait with the KMS doing the wrapping, so the KEK never leaves it.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::keys::KeyBytes;

/// A data key wrapped by a KEK, as stored in the keystore.
#[derive(Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// Which KEK wrapped it, e.g. `local:2`.
    pub kek: String,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for WrappedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WrappedKey")
            .field("kek", &self.kek)
            .finish_non_exhaustive()
    }
}

/// Why a key provider failed. Messages name the provider and key version, never key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{path} is readable by group or others (mode {mode:o}); the master key must be private. \
         Fix it with: chmod 600 {path}"
    )]
    Permissions { path: String, mode: u32 },
    #[error(
        "master key file {path} not found; run `sealsync init` to create one, or point keys.keyfile at yours"
    )]
    Missing { path: String },
    #[error("master key file {path} is not in sealsync's format: {reason}")]
    Format { path: String, reason: String },
    #[error(
        "{provider} has no master key version {kek:?} (was the master key replaced or rotated away?)"
    )]
    UnknownKek { provider: String, kek: String },
    #[error(
        "{provider} could not unwrap a data key with master key {kek:?}: wrong master key, or the keystore was altered"
    )]
    Unwrap { provider: String, kek: String },
    #[error("{provider} is unavailable: {reason}")]
    Unavailable { provider: String, reason: String },
    #[error("cannot access {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the secure random generator failed")]
    Random,
}

/// Holder of the KEK.
#[async_trait]
pub trait KeyProvider: Send + Sync + fmt::Debug {
    /// Names the provider in messages: `local keyfile /data/master.key`.
    fn describe(&self) -> String;
    /// The KEK new wraps use.
    fn current_kek(&self) -> String;
    /// Makes a new data key and its wrapped form. By default a local random key, wrapped; a
    /// KMS makes it itself.
    async fn generate(&self, context: &[u8]) -> Result<(KeyBytes, WrappedKey), KeyError> {
        let key = KeyBytes::generate().map_err(|_| KeyError::Random)?;
        let wrapped = self.wrap(&key, context).await?;
        Ok((key, wrapped))
    }
    /// Wraps a data key; `context` is bound to the result and must be given again to unwrap.
    async fn wrap(&self, key: &KeyBytes, context: &[u8]) -> Result<WrappedKey, KeyError>;
    async fn unwrap(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<KeyBytes, KeyError>;
}

/// KEK versions held in memory, shared by the keyfile and environment providers.
struct KekSet {
    prefix: &'static str,
    describe: String,
    keys: BTreeMap<u32, KeyBytes>,
}

impl KekSet {
    fn current(&self) -> u32 {
        self.keys.keys().next_back().copied().unwrap_or(1)
    }

    fn kek_id(&self, version: u32) -> String {
        format!("{}:{version}", self.prefix)
    }

    fn aad(version: u32, context: &[u8]) -> Vec<u8> {
        let mut aad = b"sealsync-kek-v1".to_vec();
        aad.extend_from_slice(&version.to_be_bytes());
        aad.extend_from_slice(context);
        aad
    }

    fn wrap(&self, key: &KeyBytes, context: &[u8]) -> Result<WrappedKey, KeyError> {
        let version = self.current();
        let kek = self.aead(version)?;
        let mut buf = vec![0u8; 12];
        buf.extend_from_slice(key.expose());
        let (nonce, tag) = kek
            .seal_in_place_separate_tag(Aad::from(Self::aad(version, context)), &mut buf[12..])
            .map_err(|_| KeyError::Random)?;
        buf[..12].copy_from_slice(nonce.as_ref());
        buf.extend_from_slice(tag.as_ref());
        Ok(WrappedKey {
            kek: self.kek_id(version),
            bytes: buf,
        })
    }

    fn unwrap(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<KeyBytes, KeyError> {
        let unknown = || KeyError::UnknownKek {
            provider: self.describe.clone(),
            kek: wrapped.kek.clone(),
        };
        let version: u32 = wrapped
            .kek
            .strip_prefix(self.prefix)
            .and_then(|v| v.strip_prefix(':'))
            .and_then(|v| v.parse().ok())
            .ok_or_else(unknown)?;
        let kek = self.aead(version)?;
        let failed = || KeyError::Unwrap {
            provider: self.describe.clone(),
            kek: wrapped.kek.clone(),
        };
        if wrapped.bytes.len() != 12 + 32 + 16 {
            return Err(failed());
        }
        let nonce = Nonce::try_assume_unique_for_key(&wrapped.bytes[..12]).map_err(|_| failed())?;
        let mut buf = Zeroizing::new(wrapped.bytes[12..].to_vec());
        let plain = kek
            .open_in_place(nonce, Aad::from(Self::aad(version, context)), &mut buf)
            .map_err(|_| failed())?;
        KeyBytes::from_slice(plain).map_err(|_| failed())
    }

    fn aead(&self, version: u32) -> Result<RandomizedNonceKey, KeyError> {
        let key = self
            .keys
            .get(&version)
            .ok_or_else(|| KeyError::UnknownKek {
                provider: self.describe.clone(),
                kek: self.kek_id(version),
            })?;
        RandomizedNonceKey::new(&AES_256_GCM, key.expose()).map_err(|_| KeyError::Random)
    }
}

/// The default provider: a private text file next to the data (or wherever configured).
pub struct LocalKeyfile {
    path: PathBuf,
    set: KekSet,
}

const KEYFILE_HEADER: &str = "# sealsync master key file. Keep it secret (mode 0600) and back it up apart\n\
# from the data: without it nothing sealsync stored can be read.\n";

impl LocalKeyfile {
    /// Creates a new keyfile with one fresh KEK (version 1). Fails if the file exists.
    pub fn create(path: &Path) -> Result<Self, KeyError> {
        let mut set = KekSet {
            prefix: "local",
            describe: describe_local(path),
            keys: BTreeMap::new(),
        };
        set.keys
            .insert(1, KeyBytes::generate().map_err(|_| KeyError::Random)?);
        let file = Self {
            path: path.to_owned(),
            set,
        };
        file.write(true)?;
        Ok(file)
    }

    /// Opens an existing keyfile; refuses one that group or others can read.
    pub fn open(path: &Path) -> Result<Self, KeyError> {
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        if !path.exists() {
            return Err(KeyError::Missing {
                path: path.display().to_string(),
            });
        }
        check_private_file(path)?;
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(io)?);
        let keys = parse_kek_lines(&text).map_err(|reason| KeyError::Format {
            path: path.display().to_string(),
            reason,
        })?;
        Ok(Self {
            path: path.to_owned(),
            set: KekSet {
                prefix: "local",
                describe: describe_local(path),
                keys,
            },
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn versions(&self) -> Vec<u32> {
        self.set.keys.keys().copied().collect()
    }

    /// Adds a new KEK version (the new current one) and saves the file atomically.
    pub fn add_version(&mut self) -> Result<u32, KeyError> {
        let next = self.set.current() + 1;
        self.set
            .keys
            .insert(next, KeyBytes::generate().map_err(|_| KeyError::Random)?);
        self.write(false)?;
        Ok(next)
    }

    /// Removes KEK versions no wrapped key uses any more, keeping the current one.
    pub fn retire_versions(&mut self, in_use: &[String]) -> Result<Vec<u32>, KeyError> {
        let current = self.set.current();
        let retired: Vec<u32> = self
            .set
            .keys
            .keys()
            .copied()
            .filter(|v| *v != current && !in_use.contains(&self.set.kek_id(*v)))
            .collect();
        if !retired.is_empty() {
            for v in &retired {
                self.set.keys.remove(v);
            }
            self.write(false)?;
        }
        Ok(retired)
    }

    fn write(&self, create_new: bool) -> Result<(), KeyError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let io = |source| KeyError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let mut text = Zeroizing::new(String::from(KEYFILE_HEADER));
        for (v, k) in &self.set.keys {
            text.push_str(&format!("v{v} {}\n", B64.encode(k.expose())));
        }
        let target = if create_new {
            self.path.clone()
        } else {
            self.path.with_extension("key.tmp")
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).mode(0o600);
        if create_new {
            options.create_new(true);
        } else {
            options.create(true).truncate(true);
        }
        let mut f = options.open(&target).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        if !create_new {
            std::fs::rename(&target, &self.path).map_err(io)?;
        }
        Ok(())
    }
}

fn describe_local(path: &Path) -> String {
    format!("local keyfile {}", path.display())
}

fn parse_kek_lines(text: &str) -> Result<BTreeMap<u32, KeyBytes>, String> {
    let mut keys = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |what: &str| format!("line {}: {what}", i + 1);
        let (version, b64) = line
            .split_once(' ')
            .ok_or_else(|| bad("expected `vN <base64 key>`"))?;
        let version: u32 = version
            .strip_prefix('v')
            .and_then(|v| v.parse().ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| bad("version must be v1, v2, …"))?;
        let raw = Zeroizing::new(
            B64.decode(b64.trim())
                .map_err(|_| bad("key is not base64"))?,
        );
        let key = KeyBytes::from_slice(&raw).map_err(|_| bad("key must be 32 bytes"))?;
        if keys.insert(version, key).is_some() {
            return Err(bad("version appears twice"));
        }
    }
    if keys.is_empty() {
        return Err("no key in it".into());
    }
    Ok(keys)
}

impl fmt::Debug for LocalKeyfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeyfile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The KEK from configuration (`master_key`, i.e. `SEALSYNC_MASTER_KEY` or `_FILE`): either one
/// base64 key (version 1) or the lines of a keyfile.
pub struct EnvKeyProvider {
    set: KekSet,
}

impl EnvKeyProvider {
    pub fn from_secret(value: &SecretString) -> Result<Self, KeyError> {
        let text = value.expose_secret().trim();
        let format_error = |reason: String| KeyError::Format {
            path: "SEALSYNC_MASTER_KEY".into(),
            reason,
        };
        let keys = if text.contains('\n') || text.starts_with('v') {
            parse_kek_lines(text).map_err(format_error)?
        } else {
            let raw = Zeroizing::new(
                B64.decode(text)
                    .map_err(|_| format_error("not base64".into()))?,
            );
            let key = KeyBytes::from_slice(&raw)
                .map_err(|_| format_error("key must be 32 bytes".into()))?;
            BTreeMap::from([(1, key)])
        };
        Ok(Self {
            set: KekSet {
                prefix: "env",
                describe: "master key from SEALSYNC_MASTER_KEY".into(),
                keys,
            },
        })
    }
}

impl fmt::Debug for EnvKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EnvKeyProvider(<redacted>)")
    }
}

/// Both in-memory providers delegate to their [`KekSet`].
macro_rules! kek_set_provider {
    ($($ty:ty),*) => {$(
        #[async_trait]
        impl KeyProvider for $ty {
            fn describe(&self) -> String {
                self.set.describe.clone()
            }
            fn current_kek(&self) -> String {
                self.set.kek_id(self.set.current())
            }
            async fn wrap(&self, key: &KeyBytes, context: &[u8]) -> Result<WrappedKey, KeyError> {
                self.set.wrap(key, context)
            }
            async fn unwrap(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<KeyBytes, KeyError> {
                self.set.unwrap(wrapped, context)
            }
        }
    )*};
}

kek_set_provider!(LocalKeyfile, EnvKeyProvider);

/// Refuses a file that group or others may read or write, the way ssh refuses a private key.
pub fn check_private_file(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keyfile_wraps_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let mut kf = LocalKeyfile::create(&path).unwrap();
        let dek = KeyBytes::generate().unwrap();
        let w1 = kf.wrap(&dek, b"ctx").await.unwrap();
        assert_eq!(w1.kek, "local:1");
        assert_eq!(kf.add_version().unwrap(), 2);
        let reopened = LocalKeyfile::open(&path).unwrap();
        assert_eq!(reopened.versions(), vec![1, 2]);
        assert_eq!(
            reopened.unwrap(&w1, b"ctx").await.unwrap().expose(),
            dek.expose()
        );
        let w2 = reopened.wrap(&dek, b"ctx").await.unwrap();
        assert_eq!(w2.kek, "local:2");
        assert!(matches!(
            reopened.unwrap(&w1, b"other").await,
            Err(KeyError::Unwrap { .. })
        ));
        assert_eq!(
            kf.retire_versions(std::slice::from_ref(&w2.kek)).unwrap(),
            vec![1]
        );
        let after = LocalKeyfile::open(&path).unwrap();
        assert!(matches!(
            after.unwrap(&w1, b"ctx").await,
            Err(KeyError::UnknownKek { .. })
        ));
    }

    #[test]
    fn keyfile_is_private_and_refused_otherwise() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        LocalKeyfile::create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = LocalKeyfile::open(&path).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
    }

    #[tokio::test]
    async fn env_key_and_wrong_key() {
        let raw = B64.encode([7u8; 32]);
        let p = EnvKeyProvider::from_secret(&SecretString::from(raw)).unwrap();
        let dek = KeyBytes::generate().unwrap();
        let w = p.wrap(&dek, b"c").await.unwrap();
        let other =
            EnvKeyProvider::from_secret(&SecretString::from(B64.encode([8u8; 32]))).unwrap();
        let err = other.unwrap(&w, b"c").await.unwrap_err().to_string();
        assert!(
            err.contains("env:1") && err.contains("wrong master key"),
            "{err}"
        );
        assert!(EnvKeyProvider::from_secret(&SecretString::from("short".to_owned())).is_err());
        assert!(!format!("{p:?}").contains(&B64.encode([7u8; 32])));
    }
}
