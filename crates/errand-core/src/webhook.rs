//! Webhooks: which of a job's events its webhook is told about, which
//! addresses a server may call, when a failed delivery is tried again, and
//! how a request is signed. No I/O: the server sends, the stores keep the
//! deliveries.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::event::EventKind;
use crate::status::JobStatus;
use crate::time::Timestamp;

/// The longest webhook URL a job may carry.
pub const MAX_WEBHOOK_URL_CHARS: usize = 2048;

/// The header that carries a delivery's signature: `t=UNIX_SECONDS,v1=HEX`.
pub const SIGNATURE_HEADER: &str = "errand-signature";

/// Where a job reports, and on which of its events.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http` or `https`; its host must be on the server's allow-list.
    #[cfg_attr(feature = "openapi", schema(max_length = 2048, min_length = 1))]
    pub url: String,
    /// `end` (the default): once when the job ends (completed, failed or
    /// canceled). `status`: on every change of status as well.
    #[serde(default)]
    pub on: WebhookOn,
}

/// Which events a webhook delivers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookOn {
    #[default]
    End,
    Status,
}

impl WebhookOn {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOn::End => "end",
            WebhookOn::Status => "status",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [WebhookOn::End, WebhookOn::Status]
            .into_iter()
            .find(|on| on.as_str() == text)
    }

    /// Whether an event of `kind` that leaves the job in `status` is
    /// delivered. Progress, log lines, checkpoints and the webhook's own
    /// records never are.
    pub fn wants(self, kind: EventKind, status: JobStatus) -> bool {
        let changes_status = matches!(
            kind,
            EventKind::Status | EventKind::Result | EventKind::Failure
        );
        changes_status && (self == WebhookOn::Status || status.is_terminal())
    }
}

/// Why a webhook URL is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRefused {
    #[error("is not a URL: {0}")]
    NotAUrl(String),
    #[error("must be http or https, not {0}")]
    Scheme(String),
    #[error("must not carry a user name or password")]
    Credentials,
    #[error("is longer than {MAX_WEBHOOK_URL_CHARS} characters")]
    TooLong,
    #[error("names {0}, which is not on this server's webhook allow-list")]
    NotAllowed(String),
    #[error("cannot be used: this server has no webhook secret configured")]
    NotConfigured,
}

/// One allowed destination: a host (or `*.` and a domain, for its
/// subdomains), with a port or any port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedHost {
    host: String,
    subdomains: bool,
    port: Option<u16>,
}

impl FromStr for AllowedHost {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let refuse = || {
            format!(
                "{text:?} is not a webhook destination: give a host, host:port, \
                 *.domain or *.domain:port"
            )
        };
        // Parsed as a URL's authority, so hosts and IPv6 literals read as
        // they do in the URLs they will be compared with.
        let (subdomains, authority) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        if authority.is_empty() || authority.contains(['/', '@', '?', '#', '*']) {
            return Err(refuse());
        }
        let url = url::Url::parse(&format!("http://{authority}/")).map_err(|_| refuse())?;
        let host = url.host_str().ok_or_else(refuse)?.to_ascii_lowercase();
        // `Url` drops port 80 for http; a destination that spells it means it.
        let port = match url.port() {
            Some(port) => Some(port),
            None if authority.ends_with(":80") => Some(80),
            None => None,
        };
        Ok(AllowedHost {
            host,
            subdomains,
            port,
        })
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.subdomains {
            f.write_str("*.")?;
        }
        f.write_str(&self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl AllowedHost {
    fn allows(&self, host: &str, port: u16) -> bool {
        let host_matches = if self.subdomains {
            host.strip_suffix(&self.host)
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
        } else {
            host == self.host
        };
        host_matches && self.port.is_none_or(|p| p == port)
    }
}

/// The destinations a server may call. Empty allows none: a webhook to
/// an arbitrary internal host is refused unless an operator listed it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookAllowList(Vec<AllowedHost>);

impl WebhookAllowList {
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| e.as_ref().parse())
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// A regular expression (ECMA-262, as JSON Schema's `pattern`) that
    /// the URLs this list allows match: for a schema that tells clients.
    /// It does not check what it cannot say (credentials, the length).
    pub fn url_pattern(&self) -> String {
        if self.0.is_empty() {
            return "^$.".into(); // matches nothing
        }
        let hosts: Vec<String> = self
            .0
            .iter()
            .map(|allowed| {
                let host = escape(&allowed.host);
                let host = if allowed.subdomains {
                    format!("[^/:@?#]+\\.{host}")
                } else {
                    host
                };
                match allowed.port {
                    Some(port) => format!("{host}:{port}"),
                    None => format!("{host}(:[0-9]+)?"),
                }
            })
            .collect();
        format!("^[hH][tT][tT][pP][sS]?://({})([/?#].*)?$", hosts.join("|"))
    }

    /// The URL, parsed, if a job may carry it and a server may call it.
    pub fn check(&self, url: &str) -> Result<url::Url, WebhookRefused> {
        if url.chars().count() > MAX_WEBHOOK_URL_CHARS {
            return Err(WebhookRefused::TooLong);
        }
        let parsed = url::Url::parse(url).map_err(|e| WebhookRefused::NotAUrl(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(WebhookRefused::Scheme(parsed.scheme().to_owned()));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(WebhookRefused::Credentials);
        }
        let host = parsed
            .host_str()
            .ok_or_else(|| WebhookRefused::NotAUrl("it has no host".into()))?
            .to_ascii_lowercase();
        let port = parsed.port_or_known_default().unwrap_or(0);
        if !self.0.iter().any(|allowed| allowed.allows(&host, port)) {
            return Err(WebhookRefused::NotAllowed(format!("{host}:{port}")));
        }
        Ok(parsed)
    }
}

/// `text` with the characters a regular expression gives meaning to escaped.
fn escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// How often and how patiently a failed delivery is tried again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The wait after the first failure; it doubles after each one.
    pub first_wait: Duration,
    /// No wait is longer.
    pub max_wait: Duration,
}

impl Default for DeliveryPolicy {
    /// Ten attempts over about two hours and a half.
    fn default() -> Self {
        DeliveryPolicy {
            max_attempts: 10,
            first_wait: Duration::from_secs(10),
            max_wait: Duration::from_secs(3600),
        }
    }
}

impl DeliveryPolicy {
    /// When attempt `attempt` (from 1) failed at `now`: when to try again,
    /// or `None` to give up.
    pub fn retry_at(&self, attempt: u32, now: Timestamp) -> Option<Timestamp> {
        if attempt >= self.max_attempts {
            return None;
        }
        let doublings = attempt.saturating_sub(1).min(32);
        let wait = self
            .first_wait
            .checked_mul(1u32 << doublings.min(31))
            .unwrap_or(self.max_wait)
            .min(self.max_wait);
        Some(now.plus(wait))
    }
}

/// How one delivery attempt went, as the job's event log records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    /// The receiver answered 2xx.
    Delivered,
    /// It did not; another attempt follows at `retry_at`.
    Retrying,
    /// It did not, and that was the last attempt.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Delivered => "delivered",
            DeliveryState::Retrying => "retrying",
            DeliveryState::Failed => "failed",
        }
    }
}

/// One delivery attempt: the `data` of a `webhook` event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryRecord {
    /// The job's status when the attempt was recorded.
    pub status: JobStatus,
    /// The delivery (one per event delivered), stable across attempts:
    /// receivers deduplicate on it.
    pub delivery_id: i64,
    /// The feed id of the event delivered.
    pub event_id: i64,
    pub url: String,
    pub attempt: u32,
    pub state: DeliveryState,
    /// The receiver's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Why the attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
}

/// What an attempt's answer means for its delivery.
pub fn decide_delivery(
    policy: &DeliveryPolicy,
    attempt: u32,
    http_status: Option<u16>,
    now: Timestamp,
) -> (DeliveryState, Option<Timestamp>) {
    if http_status.is_some_and(|s| (200..300).contains(&s)) {
        return (DeliveryState::Delivered, None);
    }
    match policy.retry_at(attempt, now) {
        Some(at) => (DeliveryState::Retrying, Some(at)),
        None => (DeliveryState::Failed, None),
    }
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The signature header's value for `body` sent at `timestamp` (Unix
/// seconds): HMAC-SHA256 over `TIMESTAMP.BODY`, so a receiver that checks
/// the time refuses a request replayed later.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let digest = mac(secret, timestamp, body).finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// Why a receiver refuses a signed request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureRefused {
    #[error("the signature header is not t=SECONDS,v1=HEX")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
    #[error("the request was signed {0} s away from now")]
    Stale(i64),
}

/// Checks a signature header as a receiver should: the MAC (in constant
/// time) and that it was signed within `tolerance` of `now_secs`.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance: Duration,
) -> Result<(), SignatureRefused> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", hex)) => signatures.push(hex),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureRefused::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureRefused::Malformed);
    }
    let skew = now_secs - timestamp;
    if skew.unsigned_abs() > tolerance.as_secs() {
        return Err(SignatureRefused::Stale(skew));
    }
    let matches = signatures.iter().any(|hex| {
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        bytes.is_some_and(|b| mac(secret, timestamp, body).verify_slice(&b).is_ok())
    });
    if matches {
        Ok(())
    } else {
        Err(SignatureRefused::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(entries: &[&str]) -> WebhookAllowList {
        WebhookAllowList::parse(entries).unwrap()
    }

    #[test]
    fn only_listed_hosts_and_ports_are_allowed() {
        let list = allow(&[
            "hooks.example.com",
            "*.internal.test:8443",
            "127.0.0.1:9000",
        ]);
        assert!(list.check("https://hooks.example.com/errand").is_ok());
        assert!(list.check("http://HOOKS.example.com:81/x").is_ok());
        assert!(list.check("https://a.internal.test:8443/").is_ok());
        assert!(list.check("https://a.b.internal.test:8443/").is_ok());
        assert!(list.check("http://127.0.0.1:9000/hook").is_ok());
        for refused in [
            "https://example.com/",
            "https://evilhooks.example.com/",
            "https://internal.test:8443/",
            "https://a.internal.test/",
            "http://127.0.0.1:9001/",
            "http://127.0.0.1/",
            "http://169.254.169.254/latest/meta-data",
        ] {
            assert!(
                matches!(list.check(refused), Err(WebhookRefused::NotAllowed(_))),
                "{refused}"
            );
        }
        assert!(WebhookAllowList::default()
            .check("https://hooks.example.com/")
            .is_err());
    }

    #[test]
    fn the_url_pattern_says_what_the_list_allows() {
        let list = allow(&["hooks.example.com", "*.internal.test:8443", "[::1]:8080"]);
        let schema = serde_json::json!({"type": "string", "pattern": list.url_pattern()});
        let fits = |url: &str| jsonschema::is_valid(&schema, &serde_json::json!(url));
        for url in [
            "https://hooks.example.com/errand",
            "http://hooks.example.com:81/x?y=1",
            "https://hooks.example.com",
            "https://a.internal.test:8443/",
            "http://[::1]:8080/hook",
        ] {
            assert!(fits(url) && list.check(url).is_ok(), "{url}");
        }
        for url in [
            "https://hooksXexample.com/",
            "https://evil.com/hooks.example.com",
            "https://hooks.example.com.evil.com/",
            "https://internal.test:8443/",
            "https://a.internal.test:9443/",
            "ftp://hooks.example.com/",
            "http://[::1]:8081/",
        ] {
            assert!(!fits(url) && list.check(url).is_err(), "{url}");
        }
        let none = WebhookAllowList::default().url_pattern();
        assert!(!jsonschema::is_valid(
            &serde_json::json!({"pattern": none}),
            &serde_json::json!("https://hooks.example.com/")
        ));
    }

    #[test]
    fn urls_that_are_not_plain_http_are_refused_naming_why() {
        let list = allow(&["example.com"]);
        assert_eq!(
            list.check("ftp://example.com/"),
            Err(WebhookRefused::Scheme("ftp".into()))
        );
        assert_eq!(
            list.check("https://user:pw@example.com/"),
            Err(WebhookRefused::Credentials)
        );
        assert!(matches!(
            list.check("example.com/hook"),
            Err(WebhookRefused::NotAUrl(_))
        ));
        let long = format!("https://example.com/{}", "a".repeat(MAX_WEBHOOK_URL_CHARS));
        assert_eq!(list.check(&long), Err(WebhookRefused::TooLong));
    }

    #[test]
    fn allow_list_entries_are_hosts_with_optional_ports() {
        for good in [
            "example.com",
            "example.com:80",
            "*.example.com",
            "[::1]:8080",
            "10.0.0.1",
        ] {
            let parsed: AllowedHost = good.parse().unwrap();
            assert_eq!(parsed.to_string(), good.to_ascii_lowercase());
        }
        for bad in [
            "",
            "*.",
            "http://example.com",
            "example.com/x",
            "a@b",
            "*",
            "ex ample.com",
        ] {
            assert!(bad.parse::<AllowedHost>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_end_webhook_hears_only_how_the_job_ended() {
        use EventKind::*;
        use JobStatus::*;
        let end = WebhookOn::End;
        assert!(end.wants(Result, Completed));
        assert!(end.wants(Failure, Failed));
        assert!(end.wants(Status, Canceled));
        assert!(!end.wants(Failure, New), "a failure that retries");
        assert!(!end.wants(Status, Running));
        assert!(!end.wants(Log, Completed));
        assert!(!end.wants(Webhook, Completed));
        let status = WebhookOn::Status;
        assert!(status.wants(Status, Running));
        assert!(status.wants(Failure, New));
        assert!(!status.wants(Progress, Running));
        assert!(!status.wants(Checkpoint, Running));
    }

    #[test]
    fn failed_deliveries_back_off_doubling_up_to_the_cap_then_give_up() {
        let policy = DeliveryPolicy {
            max_attempts: 5,
            first_wait: Duration::from_secs(10),
            max_wait: Duration::from_secs(30),
        };
        let now = Timestamp::from_micros(0);
        let waits: Vec<_> = (1..=5)
            .map(|n| policy.retry_at(n, now).map(|at| at.since(now).as_secs()))
            .collect();
        assert_eq!(waits, [Some(10), Some(20), Some(30), Some(30), None]);
        assert_eq!(
            decide_delivery(&policy, 1, Some(204), now),
            (DeliveryState::Delivered, None)
        );
        assert_eq!(
            decide_delivery(&policy, 2, Some(500), now).0,
            DeliveryState::Retrying
        );
        assert_eq!(
            decide_delivery(&policy, 5, None, now),
            (DeliveryState::Failed, None)
        );
        let huge = DeliveryPolicy {
            max_attempts: u32::MAX,
            ..DeliveryPolicy::default()
        };
        assert_eq!(
            huge.retry_at(200, now).unwrap().since(now),
            huge.max_wait,
            "no overflow"
        );
    }

    #[test]
    fn a_signature_verifies_only_for_its_body_secret_and_time() {
        let header = sign(b"secret", 1_700_000_000, b"{\"a\":1}");
        let tolerance = Duration::from_secs(300);
        assert_eq!(
            verify(b"secret", &header, b"{\"a\":1}", 1_700_000_100, tolerance),
            Ok(())
        );
        assert_eq!(
            verify(b"secret", &header, b"{\"a\":2}", 1_700_000_100, tolerance),
            Err(SignatureRefused::Mismatch)
        );
        assert_eq!(
            verify(b"other", &header, b"{\"a\":1}", 1_700_000_100, tolerance),
            Err(SignatureRefused::Mismatch)
        );
        assert_eq!(
            verify(b"secret", &header, b"{\"a\":1}", 1_700_001_000, tolerance),
            Err(SignatureRefused::Stale(1000))
        );
        assert_eq!(
            verify(b"secret", "v1=00", b"", 0, tolerance),
            Err(SignatureRefused::Malformed)
        );
    }
}
