//! AWS KMS against a real `moto` server on loopback.

use sealsync_crypto::kms_testing::Moto;
use sealsync_crypto::{AwsKmsProvider, KeyError, KeyProvider};

#[tokio::test]
async fn kms_generates_wraps_and_unwraps() {
    let Some(moto) = Moto::start() else {
        eprintln!("skipped: SEALSYNC_TEST_MOTO_SERVER is not set");
        return;
    };
    let key_id = moto.create_key().await.expect("moto creates a key");
    let provider = AwsKmsProvider::new(&moto.config(&key_id)).await.unwrap();
    assert_eq!(provider.current_kek(), format!("aws-kms:{key_id}"));
    let (key, wrapped) = provider.generate(b"workspace 1 data v1").await.unwrap();
    assert_eq!(
        provider
            .unwrap(&wrapped, b"workspace 1 data v1")
            .await
            .unwrap()
            .expose(),
        key.expose()
    );
    // The encryption context is bound: another context does not unwrap.
    let err = provider
        .unwrap(&wrapped, b"workspace 2 data v1")
        .await
        .unwrap_err();
    assert!(matches!(err, KeyError::Unwrap { .. }), "{err}");
    let again = provider.wrap(&key, b"c").await.unwrap();
    assert_eq!(
        provider.unwrap(&again, b"c").await.unwrap().expose(),
        key.expose()
    );
    assert!(!format!("{provider:?}").contains("testing"));
}

#[tokio::test]
async fn kms_unreachable_is_a_clear_error_after_retries() {
    let Some(moto) = Moto::start() else {
        eprintln!("skipped: SEALSYNC_TEST_MOTO_SERVER is not set");
        return;
    };
    // A loopback port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = moto.config("any-key");
    config.endpoint = Some(format!("http://127.0.0.1:{port}"));
    let provider = AwsKmsProvider::new(&config).await.unwrap();
    let err = provider.generate(b"ctx").await.unwrap_err().to_string();
    assert!(
        err.contains("AWS KMS key any-key") && err.contains("did not answer"),
        "{err}"
    );
}
