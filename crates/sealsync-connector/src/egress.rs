//! Outbound HTTP: every connection a connector (or the server) opens goes through [`Egress`].
//!
//! - TLS by default; plain HTTP only to an explicitly allowed loopback address.
//! - An optional allowlist of host names (`example.com`, `*.example.com`).
//! - Loopback, private, link-local, shared (CGNAT), unspecified, multicast and cloud-metadata
//!   addresses are refused unless explicitly allowed. The check runs on the URL's address when
//!   it is one, and on every address a name resolves to (our resolver refuses the name if any
//!   of them is forbidden), so no packet goes to a refused address. Redirects are checked the
//!   same way, hop by hop (at most 5). Proxies from the environment are not used.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an outbound request was refused before it left.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EgressError {
    #[error("the URL is not valid")]
    BadUrl,
    #[error("{0} is refused: only https (plain http only to an allowed loopback address)")]
    Scheme(String),
    #[error("host {0} is not in this workspace's egress allowlist")]
    HostNotAllowed(String),
    #[error(
        "address {0} is private, loopback, link-local or a metadata service, and not explicitly allowed"
    )]
    AddressRefused(IpAddr),
    #[error("the HTTP client cannot be built: {0}")]
    Client(String),
}

/// An address reached although private: `127.0.0.1:5232`, `10.1.2.3`, `[::1]:8080`. Without a
/// port, every port of the address. An address allowed on one port only is reached by URLs
/// that name it, not through a host name that resolves to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllowedAddr {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl std::str::FromStr for AllowedAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(sa) = s.parse::<SocketAddr>() {
            return Ok(Self {
                ip: sa.ip(),
                port: Some(sa.port()),
            });
        }
        let bare = s.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>()
            .map(|ip| Self { ip, port: None })
            .map_err(|_| format!("{s:?} is not an address (IP, or IP:port)"))
    }
}

/// Where a workspace's connections may go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Host names that may be reached; empty: any public host.
    pub hosts: Vec<String>,
    /// Private addresses that may be reached all the same.
    pub allow: Vec<AllowedAddr>,
}

impl EgressPolicy {
    /// A policy that may reach exactly these addresses (and any public host).
    pub fn allowing(allow: impl IntoIterator<Item = AllowedAddr>) -> Self {
        Self {
            hosts: Vec::new(),
            allow: allow.into_iter().collect(),
        }
    }

    /// Whether `ip` may be reached on `port`; with `None` (a resolved name, whose port the
    /// resolver does not see), only an address allowed on every port is.
    fn ip_allowed(&self, ip: IpAddr, port: Option<u16>) -> bool {
        let ip = canonical(ip);
        if !forbidden(ip) {
            return true;
        }
        self.allow.iter().any(|a| {
            canonical(a.ip) == ip && (a.port.is_none() || (port.is_some() && a.port == port))
        })
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.hosts.is_empty()
            || self.hosts.iter().any(|h| match h.strip_prefix("*.") {
                Some(domain) => host
                    .strip_suffix(domain)
                    .is_some_and(|rest| rest.ends_with('.')),
                None => h.eq_ignore_ascii_case(host),
            })
    }

    /// Resolves `host`; refused if any of its addresses is not allowed (checked before any
    /// connection is made).
    pub async fn resolve(
        &self,
        host: &str,
    ) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 0)).await?.collect();
        if addrs.is_empty() {
            return Err(format!("{host} has no address").into());
        }
        if let Some(bad) = addrs.iter().find(|a| !self.ip_allowed(a.ip(), None)) {
            return Err(Box::new(EgressError::AddressRefused(bad.ip())));
        }
        Ok(addrs)
    }

    /// Whether `url` may be requested: scheme, host allowlist, and its address when it is one.
    pub fn check(&self, url: &Url) -> Result<(), EgressError> {
        let host = url.host().ok_or(EgressError::BadUrl)?;
        let port = url.port_or_known_default();
        let ip = match host {
            url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
            url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
            url::Host::Domain(_) => None,
        };
        let explicitly_allowed = ip.is_some_and(|ip| {
            self.allow
                .iter()
                .any(|a| canonical(a.ip) == canonical(ip) && (a.port.is_none() || a.port == port))
        });
        match url.scheme() {
            "https" => {}
            "http" if explicitly_allowed && ip.is_some_and(|ip| canonical(ip).is_loopback()) => {}
            other => return Err(EgressError::Scheme(other.to_owned())),
        }
        if let Some(ip) = ip {
            if !explicitly_allowed && !self.ip_allowed(ip, port) {
                return Err(EgressError::AddressRefused(ip));
            }
            // An address is its own host name: the allowlist applies unless it was allowed.
            if !explicitly_allowed && !self.host_allowed(&ip.to_string()) {
                return Err(EgressError::HostNotAllowed(ip.to_string()));
            }
            return Ok(());
        }
        let name = url.host_str().ok_or(EgressError::BadUrl)?;
        if !self.host_allowed(name) {
            return Err(EgressError::HostNotAllowed(name.to_owned()));
        }
        Ok(())
    }
}

/// A host allowlist entry: a DNS name (`dav.example.com`) or every name below a domain
/// (`*.example.com`), lowercased.
pub fn host_pattern(s: &str) -> Result<String, String> {
    let s = s.trim().to_ascii_lowercase();
    let name = s.strip_prefix("*.").unwrap_or(&s);
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(s)
    } else {
        Err(format!("{s:?} is not a host name or *.domain pattern"))
    }
}

/// IPv4-mapped and -compatible IPv6 addresses are judged as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Addresses nobody outside the machine's own network should be able to make us call.
fn forbidden(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local() // 169.254/16, with the metadata service 169.254.169.254
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0 // "this network"
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 192 && b == 0 && v4.octets()[2] == 0) // IETF protocol assignments
                || (a == 198 && (18..20).contains(&b)) // benchmarking
                || a >= 240 // reserved
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local, with AWS's metadata fd00:ec2::254
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64: may carry a private IPv4
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                || v6.segments()[..6] == [0, 0, 0, 0, 0, 0] // IPv4-compatible (deprecated)
        }
    }
}

/// Resolves names and refuses any whose addresses are not all allowed.
struct CheckedResolver {
    policy: Arc<EgressPolicy>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = policy.resolve(&host).await?;
            let out: Addrs = Box::new(addrs.into_iter());
            Ok(out)
        })
    }
}

/// The one outbound HTTP client, bound to a policy.
#[derive(Clone)]
pub struct Egress {
    client: reqwest::Client,
    policy: Arc<EgressPolicy>,
}

impl fmt::Debug for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Egress")
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

/// Redirects followed per request.
const MAX_REDIRECTS: usize = 5;

impl Egress {
    pub fn new(policy: EgressPolicy) -> Result<Self, EgressError> {
        let policy = Arc::new(policy);
        let on_redirect = policy.clone();
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver {
                policy: policy.clone(),
            }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error("too many redirects");
                }
                match on_redirect.check(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(e) => attempt.error(e),
                }
            }))
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| EgressError::Client(e.to_string()))?;
        Ok(Self { client, policy })
    }

    pub fn policy(&self) -> &EgressPolicy {
        &self.policy
    }

    /// A request to `url`, once the policy allows it.
    pub fn request(
        &self,
        method: reqwest::Method,
        url: &str,
    ) -> Result<reqwest::RequestBuilder, EgressError> {
        let parsed = Url::parse(url).map_err(|_| EgressError::BadUrl)?;
        self.policy.check(&parsed)?;
        Ok(self.client.request(method, parsed))
    }

    /// Sends a request built elsewhere, once the policy allows its URL.
    pub async fn execute(&self, request: reqwest::Request) -> Result<reqwest::Response, SendError> {
        self.policy
            .check(request.url())
            .map_err(SendError::Refused)?;
        self.client.execute(request).await.map_err(|e| classify(&e))
    }
}

/// Why a request sent through [`Egress`] failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("refused by the egress policy: {0}")]
    Refused(EgressError),
    #[error("{0}")]
    Http(String),
}

/// The egress refusal somewhere in an error's chain (a resolver's or a redirect's), if any.
pub fn refusal_in(e: &(dyn std::error::Error + 'static)) -> Option<EgressError> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<EgressError>() {
            return Some(refused.clone());
        }
        source = s.source();
    }
    None
}

/// A reqwest error, with an egress refusal (from the resolver or a redirect) told apart.
pub fn classify(e: &reqwest::Error) -> SendError {
    if let Some(refused) = refusal_in(e) {
        return SendError::Refused(refused);
    }
    // reqwest's message names the URL: keep only what kind of failure it was.
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else if e.is_redirect() {
        "redirect refused"
    } else if e.is_body() || e.is_decode() {
        "the response could not be read"
    } else {
        "request failed"
    };
    SendError::Http(kind.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn private_and_metadata_addresses_are_refused() {
        let p = EgressPolicy::default();
        for u in [
            "https://169.254.169.254/latest/meta-data/",
            "https://10.0.0.1/",
            "https://172.16.5.4/",
            "https://192.168.1.1/",
            "https://127.0.0.1/",
            "https://100.64.0.1/",
            "https://0.0.0.0/",
            "https://[::1]/",
            "https://[::ffff:10.0.0.1]/",
            "https://[fe80::1]/",
            "https://[fd00:ec2::254]/",
            "https://[64:ff9b::a00:1]/",
        ] {
            assert!(
                matches!(p.check(&url(u)), Err(EgressError::AddressRefused(_))),
                "{u}"
            );
        }
        assert_eq!(p.check(&url("https://93.184.216.34/")), Ok(()));
        assert_eq!(p.check(&url("https://[2606:4700::1111]/")), Ok(()));
    }

    #[test]
    fn plain_http_only_to_allowed_loopback() {
        let p = EgressPolicy::allowing(["127.0.0.1:5232".parse().unwrap()]);
        assert_eq!(p.check(&url("http://127.0.0.1:5232/u/")), Ok(()));
        assert!(matches!(
            p.check(&url("http://127.0.0.1:5233/")),
            Err(EgressError::Scheme(_))
        ));
        assert!(matches!(
            p.check(&url("https://127.0.0.1:5233/")),
            Err(EgressError::AddressRefused(_))
        ));
        assert!(matches!(
            p.check(&url("http://example.com/")),
            Err(EgressError::Scheme(_))
        ));
        let private = EgressPolicy::allowing(["10.1.2.3".parse().unwrap()]);
        assert_eq!(private.check(&url("https://10.1.2.3:8443/")), Ok(()));
        assert!(matches!(
            private.check(&url("http://10.1.2.3/")),
            Err(EgressError::Scheme(_))
        ));
        assert!(matches!(
            EgressPolicy::default().check(&url("ftp://example.com/")),
            Err(EgressError::Scheme(_))
        ));
    }

    #[test]
    fn the_host_allowlist_matches_names_and_subdomains() {
        let p = EgressPolicy {
            hosts: vec!["example.com".into(), "*.dav.example.org".into()],
            allow: Vec::new(),
        };
        assert_eq!(p.check(&url("https://example.com/x")), Ok(()));
        assert_eq!(p.check(&url("https://EXAMPLE.com/x")), Ok(()));
        assert_eq!(p.check(&url("https://a.dav.example.org/")), Ok(()));
        for u in [
            "https://evil.com/",
            "https://example.com.evil.com/",
            "https://dav.example.org/",
            "https://xdav.example.org/",
            "https://93.184.216.34/",
        ] {
            assert!(
                matches!(p.check(&url(u)), Err(EgressError::HostNotAllowed(_))),
                "{u}"
            );
        }
    }

    #[test]
    fn allowed_addresses_parse() {
        let a: AllowedAddr = "[::1]:8080".parse().unwrap();
        assert_eq!((a.ip, a.port), ("::1".parse().unwrap(), Some(8080)));
        let a: AllowedAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(a.port, None);
        assert!("example.com".parse::<AllowedAddr>().is_err());
    }
}

#[cfg(test)]
mod network {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A loopback HTTP server answering every request with `response`; counts connections.
    async fn server(response: String) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                let response = response.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = sock.write_all(response.as_bytes()).await;
                });
            }
        });
        (addr, count)
    }

    fn ok() -> String {
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".into()
    }

    fn redirect(to: &str) -> String {
        format!(
            "HTTP/1.1 302 Found\r\nlocation: {to}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        )
    }

    async fn get(e: &Egress, url: &str) -> Result<String, SendError> {
        let req = e
            .request(reqwest::Method::GET, url)
            .map_err(SendError::Refused)?
            .build()
            .unwrap();
        let resp = e.execute(req).await?;
        Ok(resp.text().await.unwrap())
    }

    #[tokio::test]
    async fn refused_addresses_get_no_connection() {
        let (addr, count) = server(ok()).await;
        let e = Egress::new(EgressPolicy::default()).unwrap();
        let port = addr.port();
        for url in [
            format!("http://127.0.0.1:{port}/"),
            format!("https://127.0.0.1:{port}/"),
            format!("https://[::ffff:127.0.0.1]:{port}/"),
            format!("https://localhost:{port}/"),
        ] {
            assert!(
                matches!(get(&e, &url).await, Err(SendError::Refused(_))),
                "{url}"
            );
        }
        assert_eq!(count.load(Ordering::SeqCst), 0, "no connection was made");
        let allowed = Egress::new(EgressPolicy::allowing([AllowedAddr {
            ip: addr.ip(),
            port: Some(port),
        }]))
        .unwrap();
        assert_eq!(
            get(&allowed, &format!("http://{addr}/")).await.unwrap(),
            "ok"
        );
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn redirects_are_checked_hop_by_hop() {
        let (target, target_count) = server(ok()).await;
        let e = |addr: SocketAddr| {
            Egress::new(EgressPolicy::allowing([AllowedAddr {
                ip: addr.ip(),
                port: Some(addr.port()),
            }]))
            .unwrap()
        };
        for to in [
            format!("http://{target}/"),
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "https://10.0.0.1/".to_owned(),
            format!("https://localhost:{}/", target.port()),
        ] {
            let (first, _) = server(redirect(&to)).await;
            let got = get(&e(first), &format!("http://{first}/")).await;
            assert!(matches!(got, Err(SendError::Refused(_))), "{to}: {got:?}");
        }
        assert_eq!(target_count.load(Ordering::SeqCst), 0);
    }
}
