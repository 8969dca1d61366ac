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
    let dav = CardDav::open(&url, Some(&ann()), loopback(server.port), None).unwrap();
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
            async move { CardDav::open(&url, Some(&ann()), loopback(port), None) }
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
            async move { CardDav::open(&url, None, loopback(port), None) }
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
    let dav = CardDav::open(&url, Some(&wrong), loopback(server.port), None).unwrap();
    match dav.list().await {
        Err(ConnectorError::Unavailable(m)) => {
            assert!(m.contains("refused the account's credentials"), "{m}");
            assert!(!m.contains("not-the-password"));
        }
        other => panic!("{other:?}"),
    }
    let dav = CardDav::open(&url, Some(&ann()), loopback(server.port), None).unwrap();
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
        let got = CardDav::open(url, None, EgressPolicy::default(), None);
        assert!(matches!(got, Err(ConnectorError::Config(_))), "{url}");
    }
}

#[tokio::test]
async fn dav_a_server_root_is_discovered_to_its_one_address_book() {
    let server = radicale();
    radicale_book(&server, "found").await;
    let root = format!("http://127.0.0.1:{}/", server.port);
    let dav = CardDav::open(&root, Some(&ann()), loopback(server.port), None).unwrap();
    let made = dav.create(&compliance::sample_contacts()[0]).await.unwrap();
    assert!(
        made.id.as_str().starts_with(&format!("/{USER}/found/")),
        "{}",
        made.id
    );
    assert_eq!(dav.list().await.unwrap().items.len(), 1);
    // Two address books: the URL must name one.
    radicale_book(&server, "second").await;
    let dav = CardDav::open(&root, Some(&ann()), loopback(server.port), None).unwrap();
    assert!(
        matches!(dav.list().await, Err(ConnectorError::Config(m)) if m.contains("2 address books"))
    );

    let x = xandikos();
    let well_known = format!("http://127.0.0.1:{}/.well-known/carddav", x.port);
    let dav = CardDav::open(&well_known, None, loopback(x.port), None).unwrap();
    let made = dav.create(&compliance::sample_contacts()[1]).await.unwrap();
    assert!(
        made.id.as_str().starts_with("/user/contacts/addressbook/"),
        "{}",
        made.id
    );
}

/// Both servers answer `sync-collection`: a listing from a sync token shows what another client
/// changed on the server since, and equals a full listing; a cursor taken from another address
/// book is never applied to this one.
#[tokio::test]
async fn dav_changes_since_a_sync_token_come_from_the_server() {
    let r = radicale();
    let x = xandikos();
    let radicale_url = radicale_book(&r, "tokens").await;
    let other_url = radicale_book(&r, "other").await;
    let xandikos_url = format!("http://127.0.0.1:{}/user/contacts/addressbook/", x.port);
    for (url, port, credential) in [
        (radicale_url.as_str(), r.port, Some(ann())),
        (xandikos_url.as_str(), x.port, None),
    ] {
        let open = || CardDav::open(url, credential.as_ref(), loopback(port), None);
        let ours = open().unwrap();
        let samples = compliance::sample_contacts();
        let mut made = Vec::new();
        for c in &samples {
            made.push(ours.create(c).await.unwrap());
        }
        let first = ours.list_from(None).await.unwrap();
        assert_eq!(first.snapshot.items.len(), 3, "{url}");
        let cursor = first.cursor.expect("the server answers sync-collection");

        // Another client edits one card, deletes one and adds one, on the server.
        let theirs = open().unwrap();
        let mut edited = samples[0].clone();
        edited.set_text("NOTE", Some("edited by another client"));
        let edited = theirs
            .update(&made[0].id, &made[0].etag, &edited)
            .await
            .unwrap();
        theirs.delete(&made[1].id, &made[1].etag).await.unwrap();
        let mut fresh = samples[2].clone();
        fresh.set_text("UID", Some("added-by-another-client"));
        let added = theirs.create(&fresh).await.unwrap();

        let mut full = ours.list().await.unwrap().items;
        full.sort_by(|a, b| a.id.cmp(&b.id));
        for _ in 0..2 {
            // The same cursor twice: a cursor is only ever a point to list from.
            let next = ours.list_from(Some(&cursor)).await.unwrap();
            let mut items = next.snapshot.items;
            items.sort_by(|a, b| a.id.cmp(&b.id));
            assert_eq!(items, full, "{url}");
            assert!(next.cursor.is_some());
            assert!(
                items
                    .iter()
                    .any(|i| i.id == edited.id && i.etag == edited.etag)
            );
            assert!(
                items
                    .iter()
                    .any(|i| i.id == added.id && i.etag == added.etag)
            );
            assert!(!items.iter().any(|i| i.id == made[1].id));
            assert!(
                items
                    .iter()
                    .any(|i| i.id == made[2].id && i.etag == made[2].etag)
            );
        }

        // This address book's cursor on another one: ignored, a full listing instead.
        let other = CardDav::open(&other_url, Some(&ann()), loopback(r.port), None).unwrap();
        let listed = other.list_from(Some(&cursor)).await.unwrap();
        assert!(listed.snapshot.items.is_empty(), "{url}");
    }
}

/// Cards go in the version the server takes: asked of the address book's
/// `supported-address-data`; an endpoint's own choice stands when the server takes it.
#[tokio::test]
async fn dav_cards_are_written_in_a_version_the_server_takes() {
    let r = radicale();
    let x = xandikos();
    let radicale_url = radicale_book(&r, "versions").await;
    let xandikos_url = format!("http://127.0.0.1:{}/user/contacts/addressbook/", x.port);
    for (url, port, credential) in [
        (radicale_url.as_str(), r.port, Some(ann())),
        (xandikos_url.as_str(), x.port, None),
    ] {
        let open = |v| CardDav::open(url, credential.as_ref(), loopback(port), v).unwrap();
        // Neither server lists only 4.0, so with no choice made, 3.0 is written.
        let dav = open(None);
        assert_eq!(
            dav.write_version().await.unwrap(),
            VcardVersion::V3,
            "{url}"
        );
        let made = dav.create(&compliance::sample_contacts()[0]).await.unwrap();
        let fetched = dav.fetch(std::slice::from_ref(&made.id)).await.unwrap();
        assert!(fetched[0].1.is_ok());
        // Asked for 4.0: written as 4.0 where the server takes it (Xandikos); a configuration
        // error before any write where it lists only 3.0 (Radicale 3.9).
        let dav = open(Some(VcardVersion::V4));
        let before = dav.list().await.unwrap().items.len();
        if url == radicale_url {
            let refused = dav.create(&compliance::sample_contacts()[1]).await;
            assert!(
                matches!(&refused, Err(ConnectorError::Config(m)) if m.contains("does not take vCard 4.0")),
                "{refused:?}"
            );
            assert_eq!(dav.list().await.unwrap().items.len(), before);
        } else {
            assert_eq!(
                dav.write_version().await.unwrap(),
                VcardVersion::V4,
                "{url}"
            );
            let made = dav.create(&compliance::sample_contacts()[1]).await.unwrap();
            let raw = raw_card(url, port, &made.id, credential.is_some()).await;
            assert!(raw.contains("VERSION:4.0"), "{url}: {raw}");
        }
    }
}

/// A card as the server stores it, by a plain GET.
async fn raw_card(url: &str, port: u16, id: &sealsync_connector::RemoteId, auth: bool) -> String {
    let base = url::Url::parse(url).unwrap();
    let at = base.join(id.as_str()).unwrap();
    assert_eq!(at.port(), Some(port));
    let mut get = reqwest::Client::new().get(at);
    if auth {
        get = get.basic_auth(USER, Some(sealsync_connectors::testing::PASSWORD));
    }
    get.send().await.unwrap().text().await.unwrap()
}
