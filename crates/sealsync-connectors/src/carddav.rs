//! A CardDAV address book (RFC 6352), through `libdav` on our own HTTP stack: every request
//! passes the egress policy (the URL checked, names resolved and checked before connecting, no
//! proxy, no redirects followed) and carries the account's credentials.
//!
//! - The URL names the address book; a server's root (or `/.well-known/carddav`) is discovered
//!   to the signed-in principal's one address book (current-user-principal, then
//!   addressbook-home-set).
//! - Listing is one `sync-collection` report (RFC 6578) where the server supports it: the first
//!   lists every member with its etag and a sync token, later ones only what changed since the
//!   token, applied to the listing kept in the cursor. Where the server does not (or forgot the
//!   token), one `PROPFIND` (depth 1) for every member's etag. Never a per-item request.
//! - Contents come by `addressbook-multiget`, in batches.
//! - Writes are conditional: a create sends `If-None-Match: *`, an update `If-Match` with the
//!   etag last seen, a delete `If-Match` too; a 412 is a conflict for the link's policy, never a
//!   blind overwrite.
//! - Cards are written in the vCard version the server says it wants (`supported-address-data`,
//!   RFC 6352 6.2.2): 3.0 where it takes 3.0 or says nothing (every CardDAV server takes 3.0),
//!   4.0 where it takes only 4.0. An endpoint may ask for one; a version the server does not
//!   take is a configuration error, before anything is written.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use base64::Engine as _;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::TokioExecutor;
use libdav::CardDavClient;
use libdav::carddav::{
    CreateAddressBook, FindAddressBookHomeSet, FindAddressBooks, GetAddressBookResources,
};
use libdav::dav::{
    Delete, GetEtag, ListResources, PutResource, SyncCollection, WebDavClient, WebDavError,
};
use sealsync_connector::credential::Credential;
use sealsync_connector::egress::{EgressError, EgressPolicy, refusal_in};
use sealsync_connector::{
    ConnectorError, Destination, Etag, Item, ItemMeta, Listing, RemoteId, Snapshot, Source,
};
use sealsync_contact::Contact;
use sealsync_contact::vcard::{VcardVersion, read_all, to_vcard};
use secrecy::ExposeSecret as _;

use crate::vdir::file_name_for;

/// Cards fetched per `addressbook-multiget`.
const MULTIGET_BATCH: usize = 100;

/// Resolves names for the HTTP connector, refusing any that reach a forbidden address.
#[derive(Clone)]
struct CheckedDns(Arc<EgressPolicy>);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Name> for CheckedDns {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.0.clone();
        Box::pin(async move { Ok(policy.resolve(name.as_str()).await?.into_iter()) })
    }
}

/// Why a request did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("refused by the egress policy: {0}")]
    Refused(EgressError),
    #[error("{0}")]
    Transport(String),
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector<CheckedDns>>;

/// The HTTP client libdav drives: checks each URL, adds the credentials.
#[derive(Clone)]
struct Http {
    client: Client<Connector, String>,
    policy: Arc<EgressPolicy>,
    authorization: Option<HeaderValue>,
}

impl tower_service::Service<Request<String>> for Http {
    type Response = Response<hyper::body::Incoming>;
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<String>) -> Self::Future {
        let checked = url::Url::parse(&req.uri().to_string())
            .map_err(|_| EgressError::BadUrl)
            .and_then(|u| self.policy.check(&u));
        if let Err(e) = checked {
            return Box::pin(async move { Err(HttpError::Refused(e)) });
        }
        if let Some(auth) = &self.authorization {
            req.headers_mut()
                .insert(header::AUTHORIZATION, auth.clone());
        }
        let fut = self.client.request(req);
        Box::pin(async move {
            fut.await.map_err(|e| {
                // The connector's error chain carries a refusal from our resolver.
                if let Some(refused) = refusal_in(&e) {
                    return HttpError::Refused(refused);
                }
                HttpError::Transport(if e.is_connect() {
                    "could not connect".into()
                } else {
                    "the request failed".into()
                })
            })
        })
    }
}

/// One address book.
pub struct CardDav {
    dav: CardDavClient<Http>,
    /// The path given, ending in `/`.
    given: String,
    /// The address book's path, ending in `/`: the path given, or (for a server's root or
    /// `/.well-known/carddav`) the one discovery finds.
    collection: tokio::sync::OnceCell<String>,
    /// The version the endpoint asks for, if any.
    version: Option<VcardVersion>,
    /// The version cards are written in, once asked of the server.
    writes: tokio::sync::OnceCell<VcardVersion>,
    /// For messages: scheme, host and path, no credentials.
    shown: String,
}

impl fmt::Debug for CardDav {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CardDav")
            .field("collection", &self.shown)
            .finish_non_exhaustive()
    }
}

fn config(msg: impl Into<String>) -> ConnectorError {
    ConnectorError::Config(msg.into())
}

impl CardDav {
    /// The address book at `url` (its collection URL), reached under `policy`, signed in with
    /// `credential` (HTTP Basic, or a bearer key). No request is made yet.
    pub fn open(
        url: &str,
        credential: Option<&Credential>,
        policy: EgressPolicy,
        version: Option<VcardVersion>,
    ) -> Result<Self, ConnectorError> {
        let parsed = url::Url::parse(url).map_err(|_| config("the CardDAV URL is not a URL"))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(config(
                "put credentials in an account, not in the CardDAV URL",
            ));
        }
        policy
            .check(&parsed)
            .map_err(|e| config(format!("CardDAV URL: {e}")))?;
        let mut path = parsed.path().to_owned();
        if !path.ends_with('/') {
            path.push('/');
        }
        let shown = format!(
            "{}://{}{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or_default(),
            path
        );
        let base: Uri = format!(
            "{}://{}/",
            parsed.scheme(),
            &parsed[url::Position::BeforeHost..url::Position::AfterPort]
        )
        .parse()
        .map_err(|_| config("the CardDAV URL is not a URL"))?;
        let policy = Arc::new(policy);
        let mut http = HttpConnector::new_with_resolver(CheckedDns(policy.clone()));
        http.enforce_http(false);
        http.set_connect_timeout(Some(std::time::Duration::from_secs(10)));
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| config(format!("no TLS root certificates: {e}")))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(tls);
        let authorization = match credential {
            None => None,
            Some(Credential::Basic { username, password }) => {
                let raw = format!("{username}:{}", password.expose_secret());
                let encoded = base64::engine::general_purpose::STANDARD.encode(raw.as_bytes());
                Some(format!("Basic {encoded}"))
            }
            Some(Credential::ApiKey { key }) => Some(format!("Bearer {}", key.expose_secret())),
            Some(Credential::OAuth(grant)) => {
                Some(format!("Bearer {}", grant.access.expose_secret()))
            }
            Some(Credential::OAuthApp(_)) => {
                return Err(config(
                    "an oauth-app account only starts grants: use the account it connected",
                ));
            }
        }
        .map(|v| {
            HeaderValue::from_str(&v)
                .map(|mut h| {
                    h.set_sensitive(true);
                    h
                })
                .map_err(|_| config("the account's credentials cannot be sent in a header"))
        })
        .transpose()?;
        let http = Http {
            client,
            policy,
            authorization,
        };
        Ok(Self {
            dav: CardDavClient::new(WebDavClient::new(base, http)),
            given: path,
            collection: tokio::sync::OnceCell::new(),
            version,
            writes: tokio::sync::OnceCell::new(),
            shown,
        })
    }

    fn failed(&self, e: WebDavError<HttpError>) -> ConnectorError {
        match e {
            WebDavError::PreconditionFailed(_) => ConnectorError::Conflict,
            WebDavError::BadStatusCode(StatusCode::PRECONDITION_FAILED) => ConnectorError::Conflict,
            WebDavError::BadStatusCode(StatusCode::NOT_FOUND) => ConnectorError::NotFound,
            WebDavError::BadStatusCode(s)
                if s == StatusCode::UNAUTHORIZED || s == StatusCode::FORBIDDEN =>
            {
                ConnectorError::Unavailable(format!(
                    "{}: the server refused the account's credentials ({s})",
                    self.shown
                ))
            }
            WebDavError::BadStatusCode(s) => {
                ConnectorError::Unavailable(format!("{}: the server answered {s}", self.shown))
            }
            WebDavError::Request(r) => ConnectorError::Unavailable(format!("{}: {r}", self.shown)),
            WebDavError::Xml(_) | WebDavError::InvalidResponse(_) => ConnectorError::Unavailable(
                format!("{}: the server's answer could not be read", self.shown),
            ),
            WebDavError::InvalidInput(_) => {
                ConnectorError::Invalid(format!("{}: an item path is not valid", self.shown))
            }
        }
    }

    /// Makes the address book on the server (extended `MKCOL`), for a push into a new one.
    pub async fn create_address_book(&self) -> Result<(), ConnectorError> {
        self.dav
            .request(CreateAddressBook::new(&self.given))
            .await
            .map(|_| ())
            .map_err(|e| self.failed(e))
    }

    /// The address book's path. A server's root (or `/.well-known/carddav`) is discovered once:
    /// the signed-in principal, its address book home, and the one address book there.
    async fn collection(&self) -> Result<&str, ConnectorError> {
        self.collection
            .get_or_try_init(|| async {
                if self.given != "/" && self.given != "/.well-known/carddav/" {
                    return Ok(self.given.clone());
                }
                self.discover().await
            })
            .await
            .map(String::as_str)
    }

    async fn discover(&self) -> Result<String, ConnectorError> {
        let unavailable = |what: &str| {
            ConnectorError::Unavailable(format!("{}: discovery found no {what}", self.shown))
        };
        let principal = self
            .dav
            .find_current_user_principal()
            .await
            .map_err(|e| ConnectorError::Unavailable(format!("{}: discovery: {e}", self.shown)))?
            .ok_or_else(|| unavailable("current-user-principal"))?;
        let homes = self
            .dav
            .request(FindAddressBookHomeSet::new(principal.path()))
            .await
            .map_err(|e| self.failed(e))?
            .home_sets;
        let mut books = Vec::new();
        for home in &homes {
            let found = self
                .dav
                .request(FindAddressBooks::new(home.path()))
                .await
                .map_err(|e| self.failed(e))?;
            books.extend(found.addressbooks.into_iter().map(|b| b.href));
        }
        match books.as_slice() {
            [one] => Ok(if one.ends_with('/') {
                one.clone()
            } else {
                format!("{one}/")
            }),
            [] => Err(unavailable("address book")),
            many => Err(ConnectorError::Config(format!(
                "{}: the account has {} address books ({}); give the URL of one",
                self.shown,
                many.len(),
                many.join(", ")
            ))),
        }
    }

    /// The vCard version cards are written in: see the module's notes.
    pub async fn write_version(&self) -> Result<VcardVersion, ConnectorError> {
        self.writes
            .get_or_try_init(|| async {
                let collection = self.collection().await?;
                let taken = match self.dav.request(SupportedAddressData(collection)).await {
                    Ok(v) => v,
                    // A server that cannot say takes 3.0, as every CardDAV server must.
                    Err(WebDavError::Request(e)) => {
                        return Err(self.failed(WebDavError::Request(e)));
                    }
                    Err(_) => Vec::new(),
                };
                let takes = |v: &str| taken.is_empty() || taken.iter().any(|t| t == v);
                match self.version {
                    Some(VcardVersion::V4) if !takes("4.0") => Err(config(format!(
                        "{}: the server does not take vCard 4.0 (it takes {})",
                        self.shown,
                        taken.join(", ")
                    ))),
                    Some(VcardVersion::V3) if !takes("3.0") => Err(config(format!(
                        "{}: the server does not take vCard 3.0 (it takes {})",
                        self.shown,
                        taken.join(", ")
                    ))),
                    Some(v) => Ok(v),
                    None if takes("3.0") => Ok(VcardVersion::V3),
                    None if takes("4.0") => Ok(VcardVersion::V4),
                    None => Err(config(format!(
                        "{}: the server takes no vCard version this connector writes ({})",
                        self.shown,
                        taken.join(", ")
                    ))),
                }
            })
            .await
            .copied()
    }

    /// The etag of `href`, when a write's answer did not carry one.
    async fn etag_of(&self, href: &str) -> Result<Etag, ConnectorError> {
        let r = self
            .dav
            .request(GetEtag::new(href))
            .await
            .map_err(|e| self.failed(e))?;
        Ok(Etag::new(r.etag))
    }

    fn parse(&self, href: &str, data: &str) -> Result<Contact, ConnectorError> {
        let (cards, rejected) = read_all(data.as_bytes());
        let mut cards = cards.into_iter();
        match (cards.next(), cards.next()) {
            (Some(card), None) => Ok(card.contact),
            (Some(_), Some(_)) => Err(ConnectorError::Invalid(format!(
                "{href}: holds more than one vCard"
            ))),
            (None, _) => Err(ConnectorError::Invalid(match rejected.first() {
                Some(r) => format!("{href} line {}: {}", r.line, r.reason),
                None => format!("{href}: no vCard"),
            })),
        }
    }
}

/// `PROPFIND` (depth 0) of an address book's `supported-address-data`: the vCard versions it
/// takes as `text/vcard` (none listed: the server did not say).
struct SupportedAddressData<'a>(&'a str);

const SUPPORTED_ADDRESS_DATA: libdav::PropertyName =
    libdav::PropertyName::new(libdav::names::CARDDAV, "supported-address-data");

impl libdav::requests::DavRequest for SupportedAddressData<'_> {
    type Response = Vec<String>;
    type ParseError = libdav::requests::ParseResponseError;
    type Error<E> = WebDavError<E>;

    fn prepare_request(&self, base_url: Uri) -> Result<Request<String>, http::Error> {
        use libdav::xmlutils::XmlNode;
        let mut prop = XmlNode::new(&libdav::names::PROP);
        prop.children = vec![XmlNode::new(&SUPPORTED_ADDRESS_DATA)];
        let mut propfind = XmlNode::new(&libdav::names::PROPFIND);
        propfind.children = vec![prop];
        let (name, value) = libdav::requests::xml_content_type_header();
        Request::builder()
            .method(http::Method::from_bytes(b"PROPFIND")?)
            .uri(libdav::dav::make_relative_url(base_url, self.0)?)
            .header("Depth", "0")
            .header(name, value)
            .body(propfind.render_node())
    }

    fn parse_response(
        &self,
        parts: &http::response::Parts,
        body: &[u8],
    ) -> Result<Self::Response, Self::ParseError> {
        let doc = libdav::xmlutils::validate_xml_response(parts, body)?;
        let mut versions = Vec::new();
        if let Some(prop) = doc
            .root_element()
            .descendants()
            .find(|n| n.tag_name() == SUPPORTED_ADDRESS_DATA)
        {
            for t in prop
                .descendants()
                .filter(|n| n.tag_name().name() == "address-data-type")
            {
                let vcard = t
                    .attribute("content-type")
                    .is_none_or(|c| c.eq_ignore_ascii_case("text/vcard"));
                if vcard {
                    versions.push(t.attribute("version").unwrap_or("3.0").to_owned());
                }
            }
        }
        Ok(versions)
    }
}

/// What a CardDAV listing leaves for the next one: the collection it was taken from, the
/// server's sync token, and every member with its etag at that token.
#[derive(serde::Serialize, serde::Deserialize)]
struct Cursor {
    collection: String,
    token: String,
    items: std::collections::BTreeMap<String, String>,
}

impl Cursor {
    /// Every member; an href that cannot be an id fails the listing (dropping it would read
    /// as a deletion).
    fn snapshot(&self) -> Result<Snapshot, ConnectorError> {
        let items = self
            .items
            .iter()
            .map(|(href, etag)| {
                Ok(ItemMeta {
                    id: RemoteId::parse(href)?,
                    etag: Etag::new(etag.clone()),
                    modified_ms: None,
                })
            })
            .collect::<Result<_, ConnectorError>>()?;
        Ok(Snapshot { items })
    }
}

impl CardDav {
    /// Whether `href` is a member of the collection (not the collection itself).
    fn is_member(collection: &str, href: &str) -> bool {
        href.trim_end_matches('/') != collection.trim_end_matches('/')
    }

    /// One `sync-collection` report from `token` (none: everything), applied to `items`.
    /// `None` when the server cannot answer it (no support, a forgotten token, a truncated
    /// answer): the caller lists in full instead.
    async fn sync_collection(
        &self,
        collection: &str,
        token: Option<&str>,
        mut items: std::collections::BTreeMap<String, String>,
    ) -> Result<Option<Cursor>, ConnectorError> {
        let mut request = SyncCollection::new(collection);
        if let Some(token) = token {
            request = request.with_sync_token(token);
        }
        let answer = match self.dav.request(request).await {
            Ok(a) => a,
            // Transport failures and refused credentials are the listing's failure, not a
            // reason to try another way.
            Err(e @ WebDavError::Request(_)) => return Err(self.failed(e)),
            Err(WebDavError::BadStatusCode(s))
                if s == StatusCode::UNAUTHORIZED || s == StatusCode::NOT_FOUND =>
            {
                return Err(self.failed(WebDavError::BadStatusCode(s)));
            }
            Err(_) => return Ok(None),
        };
        for href in answer.deleted {
            items.remove(&href);
        }
        for r in answer.changed {
            if r.resource_type.is_collection || !Self::is_member(collection, &r.href) {
                continue;
            }
            let Some(etag) = r.etag else {
                return Ok(None);
            };
            items.insert(r.href, etag);
        }
        Ok(Some(Cursor {
            collection: collection.to_owned(),
            token: answer.new_sync_token,
            items,
        }))
    }
}

const CONTENT_TYPE: &str = "text/vcard; charset=utf-8";

#[async_trait]
impl Source for CardDav {
    async fn list(&self) -> Result<Snapshot, ConnectorError> {
        let listed = self
            .dav
            .request(ListResources::new(self.collection().await?))
            .await
            .map_err(|e| self.failed(e))?;
        let mut items = Vec::with_capacity(listed.resources.len());
        for r in listed.resources {
            if r.resource_type.is_collection || !Self::is_member(self.collection().await?, &r.href)
            {
                continue;
            }
            let Some(etag) = r.etag else {
                // Without an etag, changes cannot be told apart: never guess.
                return Err(ConnectorError::Unavailable(format!(
                    "{}: the server listed an item without an etag",
                    self.shown
                )));
            };
            items.push(ItemMeta {
                id: RemoteId::parse(&r.href)?,
                etag: Etag::new(etag),
                modified_ms: None,
            });
        }
        Ok(Snapshot { items })
    }

    async fn list_from(&self, cursor: Option<&[u8]>) -> Result<Listing, ConnectorError> {
        let collection = self.collection().await?;
        let earlier = cursor
            .and_then(|c| serde_json::from_slice::<Cursor>(c).ok())
            .filter(|c| c.collection == collection);
        let mut next = None;
        if let Some(earlier) = earlier {
            next = self
                .sync_collection(collection, Some(&earlier.token), earlier.items)
                .await?;
        }
        if next.is_none() {
            next = self
                .sync_collection(collection, None, Default::default())
                .await?;
        }
        match next {
            Some(next) => Ok(Listing {
                snapshot: next.snapshot()?,
                cursor: serde_json::to_vec(&next).ok(),
            }),
            None => Ok(Listing {
                snapshot: self.list().await?,
                cursor: None,
            }),
        }
    }

    async fn fetch(
        &self,
        ids: &[RemoteId],
    ) -> Result<Vec<(RemoteId, Result<Item, ConnectorError>)>, ConnectorError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MULTIGET_BATCH) {
            let hrefs: Vec<&str> = chunk.iter().map(RemoteId::as_str).collect();
            let got = self
                .dav
                .request(GetAddressBookResources::new(self.collection().await?).with_hrefs(&hrefs))
                .await
                .map_err(|e| self.failed(e))?;
            let mut answered = std::collections::HashMap::new();
            for r in got.resources {
                answered.insert(r.href.clone(), r.content);
            }
            for id in chunk {
                let item = match answered.remove(id.as_str()) {
                    Some(Ok(content)) => {
                        self.parse(id.as_str(), &content.data).map(|contact| Item {
                            meta: ItemMeta {
                                id: id.clone(),
                                etag: Etag::new(content.etag),
                                modified_ms: None,
                            },
                            contact,
                        })
                    }
                    Some(Err(StatusCode::NOT_FOUND)) | None => Err(ConnectorError::NotFound),
                    Some(Err(status)) => Err(ConnectorError::Unavailable(format!(
                        "{}: the server answered {status}",
                        id.as_str()
                    ))),
                };
                out.push((id.clone(), item));
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Destination for CardDav {
    async fn create(&self, contact: &Contact) -> Result<ItemMeta, ConnectorError> {
        let text = to_vcard(contact, self.write_version().await?);
        let name = file_name_for(contact);
        let collection = self.collection().await?;
        let mut href = format!("{collection}{name}");
        for attempt in 0..5 {
            let put = self
                .dav
                .request(PutResource::new(&href).create(text.clone(), CONTENT_TYPE))
                .await;
            match put.map_err(|e| self.failed(e)) {
                Ok(r) => {
                    let etag = match r.etag {
                        Some(e) => Etag::new(e),
                        None => self.etag_of(&href).await?,
                    };
                    return Ok(ItemMeta {
                        id: RemoteId::parse(&href)?,
                        etag,
                        modified_ms: None,
                    });
                }
                // Taken: another name, never a replacement.
                Err(ConnectorError::Conflict) => {
                    href = format!(
                        "{}{}-{}.vcf",
                        collection,
                        name.trim_end_matches(".vcf"),
                        attempt + 2
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Err(ConnectorError::Unavailable(format!(
            "{}: no free name for a new card",
            self.shown
        )))
    }

    async fn update(
        &self,
        id: &RemoteId,
        expected: &Etag,
        contact: &Contact,
    ) -> Result<ItemMeta, ConnectorError> {
        let text = to_vcard(contact, self.write_version().await?);
        let r = self
            .dav
            .request(PutResource::new(id.as_str()).update(text, CONTENT_TYPE, expected.as_str()))
            .await
            .map_err(|e| self.failed(e))?;
        let etag = match r.etag {
            Some(e) => Etag::new(e),
            None => self.etag_of(id.as_str()).await?,
        };
        Ok(ItemMeta {
            id: id.clone(),
            etag,
            modified_ms: None,
        })
    }

    async fn delete(&self, id: &RemoteId, expected: &Etag) -> Result<(), ConnectorError> {
        match self
            .dav
            .request(Delete::new(id.as_str()).with_etag(expected.as_str()))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.failed(e) {
                ConnectorError::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }
}
