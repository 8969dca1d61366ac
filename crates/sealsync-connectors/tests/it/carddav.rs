//! The CardDAV connector against real servers on loopback: Radicale and Xandikos, from PyPI.
//! `SEALSYNC_TEST_RADICALE` and `SEALSYNC_TEST_XANDIKOS` name their programs (`scripts/test`
//! installs them into its venv and sets both).

use sealsync_connector::compliance::{self, Fidelity};
use sealsync_connector::credential::Credential;
use sealsync_connector::egress::EgressPolicy;
use sealsync_connector::{ConnectorError, Destination, Etag, Source};
use sealsync_connectors::carddav::CardDav;
use sealsync_connectors::testing::{DavServer, USER, ann, loopback, radicale, xandikos};
use sealsync_contact::vcard::VcardVersion;

async fn radicale_book(server: &DavServer, name: &str) -> String {
    let url = format!("http://127.0.0.1:{}/{USER}/{name}/", server.port);
    let dav = CardDav::open(&url, Some(&ann()), loopback(server.port), VcardVersion::V3).unwrap();
    dav.create_address_book().await.unwrap();
    url
}

#[tokio::test]
async fn dav_radicale_passes_the_compliance_suite() {
    let server = radicale();
    let url = radicale_book(&server, "compliance").await;
    let port = server.port;
    compliance::run(
        || {
            let url = url.clone();
            async move { CardDav::open(&url, Some(&ann()), loopback(port), VcardVersion::V3) }
        },
        Fidelity::Full,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn dav_xandikos_passes_the_compliance_suite() {
    let server = xandikos();
    let url = format!(
        "http://127.0.0.1:{}/user/contacts/addressbook/",
        server.port
    );
    let port = server.port;
    compliance::run(
        || {
            let url = url.clone();
            async move { CardDav::open(&url, None, loopback(port), VcardVersion::V3) }
        },
        Fidelity::Full,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn dav_wrong_password_and_stale_etags_are_refused() {
    let server = radicale();
    let url = radicale_book(&server, "rules").await;
    let wrong = Credential::Basic {
        username: USER.into(),
        password: "not-the-password".to_owned().into(),
    };
    let dav = CardDav::open(&url, Some(&wrong), loopback(server.port), VcardVersion::V3).unwrap();
    match dav.list().await {
        Err(ConnectorError::Unavailable(m)) => {
            assert!(m.contains("refused the account's credentials"), "{m}");
            assert!(!m.contains("not-the-password"));
        }
        other => panic!("{other:?}"),
    }
    let dav = CardDav::open(&url, Some(&ann()), loopback(server.port), VcardVersion::V3).unwrap();
    let c = &compliance::sample_contacts()[0];
    let made = dav.create(c).await.unwrap();
    // Someone else changed it on the server: our etag is stale, so the update is a conflict.
    let mut edited = c.clone();
    edited.push(sealsync_contact::Property::text(
        "NOTE",
        "edited on the server",
    ));
    let theirs = dav.update(&made.id, &made.etag, &edited).await.unwrap();
    assert_ne!(theirs.etag, made.etag);
    assert_eq!(
        dav.update(&made.id, &made.etag, c).await.unwrap_err(),
        ConnectorError::Conflict
    );
    assert_eq!(
        dav.delete(&made.id, &Etag::new("\"stale\""))
            .await
            .unwrap_err(),
        ConnectorError::Conflict
    );
    dav.delete(&made.id, &theirs.etag).await.unwrap();
    assert!(dav.list().await.unwrap().items.is_empty());
}

#[tokio::test]
async fn dav_urls_outside_the_policy_are_refused_before_connecting() {
    for url in [
        "http://169.254.169.254/latest/",
        "https://10.0.0.1/dav/",
        "http://127.0.0.1:5232/u/c/",
        "http://u:p@127.0.0.1:5232/u/c/",
    ] {
        let got = CardDav::open(url, None, EgressPolicy::default(), VcardVersion::V3);
        assert!(matches!(got, Err(ConnectorError::Config(_))), "{url}");
    }
}

#[tokio::test]
async fn dav_a_server_root_is_discovered_to_its_one_address_book() {
    let server = radicale();
    radicale_book(&server, "found").await;
    let root = format!("http://127.0.0.1:{}/", server.port);
    let dav = CardDav::open(&root, Some(&ann()), loopback(server.port), VcardVersion::V3).unwrap();
    let made = dav.create(&compliance::sample_contacts()[0]).await.unwrap();
    assert!(
        made.id.as_str().starts_with(&format!("/{USER}/found/")),
        "{}",
        made.id
    );
    assert_eq!(dav.list().await.unwrap().items.len(), 1);
    // Two address books: the URL must name one.
    radicale_book(&server, "second").await;
    let dav = CardDav::open(&root, Some(&ann()), loopback(server.port), VcardVersion::V3).unwrap();
    assert!(
        matches!(dav.list().await, Err(ConnectorError::Config(m)) if m.contains("2 address books"))
    );

    let x = xandikos();
    let well_known = format!("http://127.0.0.1:{}/.well-known/carddav", x.port);
    let dav = CardDav::open(&well_known, None, loopback(x.port), VcardVersion::V3).unwrap();
    let made = dav.create(&compliance::sample_contacts()[1]).await.unwrap();
    assert!(
        made.id.as_str().starts_with("/user/contacts/addressbook/"),
        "{}",
        made.id
    );
}
