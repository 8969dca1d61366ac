//! AWS KMS as the key provider: the master key never leaves KMS. Data keys are made by
//! `GenerateDataKey` and unwrapped by `Decrypt`, both bound to an encryption context, with
//! bounded retries and backoff when KMS is unreachable.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::Client;
use aws_sdk_kms::config::Credentials;
use aws_sdk_kms::error::SdkError;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use secrecy::{ExposeSecret as _, SecretString};

use crate::keys::KeyBytes;
use crate::provider::{KeyError, KeyProvider, WrappedKey};

/// Where and which KMS key.
#[derive(Debug, Clone, Default)]
pub struct AwsKmsConfig {
    /// Key id, ARN or alias (`alias/sealsync`).
    pub key_id: String,
    /// AWS region; default from the AWS environment.
    pub region: Option<String>,
    /// Another endpoint (a VPC endpoint, or a test server).
    pub endpoint: Option<String>,
    /// Attempts per call before giving up (default 4).
    pub max_attempts: Option<u32>,
    /// Static credentials (access key id, secret); default: the standard AWS credential chain.
    pub credentials: Option<(String, SecretString)>,
}

/// The AWS KMS provider.
pub struct AwsKmsProvider {
    client: Client,
    key_id: String,
}

const KEK_PREFIX: &str = "aws-kms:";
const CONTEXT_KEY: &str = "sealsync";

impl AwsKmsProvider {
    /// A client from the standard AWS credential chain (environment, profile, instance role).
    pub async fn new(config: &AwsKmsConfig) -> Result<Self, KeyError> {
        if config.key_id.trim().is_empty() {
            return Err(KeyError::Unavailable {
                provider: "AWS KMS".into(),
                reason: "no key id configured (keys.kms_key_id)".into(),
            });
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(config.max_attempts.unwrap_or(4))
                    .with_initial_backoff(Duration::from_millis(200)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(Duration::from_secs(10))
                    .operation_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(region) = &config.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some((id, secret)) = &config.credentials {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.expose_secret().to_owned(),
                None,
                None,
                "sealsync configuration",
            ));
        }
        let sdk = loader.load().await;
        Ok(Self {
            client: Client::new(&sdk),
            key_id: config.key_id.clone(),
        })
    }

    fn error<E: std::error::Error + aws_sdk_kms::error::ProvideErrorMetadata + 'static, R>(
        &self,
        kek: &str,
        e: SdkError<E, R>,
    ) -> KeyError {
        let provider = self.describe();
        match &e {
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => KeyError::Unavailable {
                provider,
                reason: "KMS did not answer (retried with backoff); check the endpoint and network"
                    .into(),
            },
            SdkError::ServiceError(service) => {
                let code = service.err().code().unwrap_or("unknown error").to_owned();
                match code.as_str() {
                    "InvalidCiphertextException" | "IncorrectKeyException" => KeyError::Unwrap {
                        provider,
                        kek: kek.to_owned(),
                    },
                    "NotFoundException" | "DisabledException" | "KMSInvalidStateException" => {
                        KeyError::UnknownKek {
                            provider,
                            kek: kek.to_owned(),
                        }
                    }
                    _ => KeyError::Unavailable {
                        provider,
                        reason: format!("KMS refused the request ({code})"),
                    },
                }
            }
            _ => KeyError::Unavailable {
                provider,
                reason: "the KMS request failed".into(),
            },
        }
    }
}

fn context_value(context: &[u8]) -> String {
    B64.encode(context)
}

impl fmt::Debug for AwsKmsProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsKmsProvider")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl KeyProvider for AwsKmsProvider {
    fn describe(&self) -> String {
        format!("AWS KMS key {}", self.key_id)
    }

    fn current_kek(&self) -> String {
        format!("{KEK_PREFIX}{}", self.key_id)
    }

    async fn generate(&self, context: &[u8]) -> Result<(KeyBytes, WrappedKey), KeyError> {
        let kek = self.current_kek();
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(CONTEXT_KEY, context_value(context))
            .send()
            .await
            .map_err(|e| self.error(&kek, e))?;
        let (Some(plain), Some(blob)) = (out.plaintext(), out.ciphertext_blob()) else {
            return Err(KeyError::Unavailable {
                provider: self.describe(),
                reason: "KMS returned no data key".into(),
            });
        };
        let key = KeyBytes::from_slice(plain.as_ref()).map_err(|_| KeyError::Unwrap {
            provider: self.describe(),
            kek: kek.clone(),
        })?;
        Ok((
            key,
            WrappedKey {
                kek,
                bytes: blob.as_ref().to_vec(),
            },
        ))
    }

    async fn wrap(&self, key: &KeyBytes, context: &[u8]) -> Result<WrappedKey, KeyError> {
        let kek = self.current_kek();
        let out = self
            .client
            .encrypt()
            .key_id(&self.key_id)
            .plaintext(Blob::new(key.expose().to_vec()))
            .encryption_context(CONTEXT_KEY, context_value(context))
            .send()
            .await
            .map_err(|e| self.error(&kek, e))?;
        let blob = out.ciphertext_blob().ok_or_else(|| KeyError::Unavailable {
            provider: self.describe(),
            reason: "KMS returned no ciphertext".into(),
        })?;
        Ok(WrappedKey {
            kek,
            bytes: blob.as_ref().to_vec(),
        })
    }

    async fn unwrap(&self, wrapped: &WrappedKey, context: &[u8]) -> Result<KeyBytes, KeyError> {
        let Some(key_id) = wrapped.kek.strip_prefix(KEK_PREFIX) else {
            return Err(KeyError::UnknownKek {
                provider: self.describe(),
                kek: wrapped.kek.clone(),
            });
        };
        let out = self
            .client
            .decrypt()
            .key_id(key_id)
            .ciphertext_blob(Blob::new(wrapped.bytes.clone()))
            .encryption_context(CONTEXT_KEY, context_value(context))
            .send()
            .await
            .map_err(|e| self.error(&wrapped.kek, e))?;
        let plain = out.plaintext().ok_or_else(|| KeyError::Unwrap {
            provider: self.describe(),
            kek: wrapped.kek.clone(),
        })?;
        KeyBytes::from_slice(plain.as_ref()).map_err(|_| KeyError::Unwrap {
            provider: self.describe(),
            kek: wrapped.kek.clone(),
        })
    }
}

/// Test support: a `moto` KMS server on loopback (`SEALSYNC_TEST_MOTO_SERVER` names its
/// `moto_server` executable; the test script installs it).
pub mod testing {
    use std::net::TcpListener;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use aws_config::{BehaviorVersion, Region};
    use aws_sdk_kms::config::Credentials;
    use secrecy::SecretString;

    use super::AwsKmsConfig;

    /// A running moto server, stopped on drop.
    #[derive(Debug)]
    pub struct Moto {
        child: Child,
        pub endpoint: String,
    }

    impl Moto {
        /// Starts one, or `None` when `SEALSYNC_TEST_MOTO_SERVER` is not set.
        pub fn start() -> Option<Self> {
            let exe = std::env::var("SEALSYNC_TEST_MOTO_SERVER").ok()?;
            let port = TcpListener::bind("127.0.0.1:0")
                .ok()?
                .local_addr()
                .ok()?
                .port();
            let child = Command::new(exe)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .ok()?;
            let moto = Moto {
                child,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            let deadline = Instant::now() + Duration::from_secs(30);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Some(moto)
        }

        /// A provider configuration for `key_id` on this server.
        pub fn config(&self, key_id: &str) -> AwsKmsConfig {
            AwsKmsConfig {
                key_id: key_id.to_owned(),
                region: Some("us-east-1".into()),
                endpoint: Some(self.endpoint.clone()),
                max_attempts: Some(2),
                credentials: Some(("testing".into(), SecretString::from("testing".to_owned()))),
            }
        }

        /// Creates a symmetric key; returns its id.
        pub async fn create_key(&self) -> Option<String> {
            let conf = aws_sdk_kms::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(Region::new("us-east-1"))
                .endpoint_url(&self.endpoint)
                .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
                .build();
            let client = aws_sdk_kms::Client::from_conf(conf);
            let out = client.create_key().send().await.ok()?;
            out.key_metadata().map(|m| m.key_id().to_owned())
        }
    }

    impl Drop for Moto {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
