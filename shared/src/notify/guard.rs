//! Where a notification may be sent: `https` URLs whose host resolves only to public addresses.
//!
//! A URL is checked when a channel is saved ([`check_target`]) and again at every connection: the
//! HTTP client resolves names through [`GuardedResolver`], which hands the connector only the
//! addresses it checked, so nothing re-resolves between the check and the connect (a DNS answer
//! that changes in between cannot point the request at the metadata service). A URL whose host is
//! an address is checked by [`check_url`] before each request. Redirects are never followed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why a target is refused; the text is what the `422` and the delivery log say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("url must be an absolute URL")]
    Invalid,
    #[error("url must use https")]
    NotHttps,
    #[error("url must not resolve to a loopback, private, link-local or multicast address")]
    Private,
    #[error("url's host does not resolve")]
    Unresolvable,
}

/// Whether an address is one a notification may go to: not loopback, private (RFC 1918, ULA),
/// link-local (the cloud metadata addresses 169.254.169.254 and fd00:ec2::254 included), CGNAT,
/// multicast, broadcast, reserved or unspecified. IPv4-mapped and NAT64 IPv6 addresses are judged
/// by the IPv4 address inside.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let s = v6.segments();
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                return is_public_v4(Ipv4Addr::new(a, b, c, d));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local, fd00:ec2::254 included
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8)) // documentation
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || a == 0 // "this network"
        || (a == 100 && (64..128).contains(&b)) // CGNAT
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

/// Parses a target URL and checks what can be checked without DNS: the scheme, and the host when
/// it is an address. `allow_private` (`NOTIFY_ALLOW_PRIVATE_TARGETS`) lifts both checks.
pub fn check_url(text: &str, allow_private: bool) -> Result<Url, TargetError> {
    let url = Url::parse(text).map_err(|_| TargetError::Invalid)?;
    if url.host().is_none() || !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Invalid);
    }
    if allow_private {
        return match url.scheme() {
            "https" | "http" => Ok(url),
            _ => Err(TargetError::NotHttps),
        };
    }
    if url.scheme() != "https" {
        return Err(TargetError::NotHttps);
    }
    if let Some(ip) = literal_ip(&url)
        && !is_public(ip)
    {
        return Err(TargetError::Private);
    }
    Ok(url)
}

/// When a channel is saved: the URL, and every address its host resolves to now.
pub async fn check_target(text: &str, allow_private: bool) -> Result<Url, TargetError> {
    let url = check_url(text, allow_private)?;
    if allow_private || literal_ip(&url).is_some() {
        return Ok(url);
    }
    let host = url.host_str().ok_or(TargetError::Invalid)?;
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, 443))
        .await
        .map_err(|_| TargetError::Unresolvable)?
        .collect();
    if addrs.is_empty() {
        return Err(TargetError::Unresolvable);
    }
    if addrs.iter().any(|a| !is_public(a.ip())) {
        return Err(TargetError::Private);
    }
    Ok(url)
}

fn literal_ip(url: &Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// The HTTP client's resolver: the system's answer, keeping only public addresses (all of them
/// when private targets are allowed). The connector connects to exactly these.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver {
    pub allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let found = tokio::net::lookup_host((name.as_str(), 0)).await?;
            let addrs: Vec<SocketAddr> = found
                .filter(|a| allow_private || is_public(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(TargetError::Private) as _);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_special_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.2.3",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} should be refused");
        }
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(ip.parse().unwrap()), "{ip} should be allowed");
        }
    }

    #[test]
    fn urls_are_https_with_a_public_literal_host() {
        assert_eq!(
            check_url("http://example.com/x", false),
            Err(TargetError::NotHttps)
        );
        assert_eq!(
            check_url("https://127.0.0.1/x", false),
            Err(TargetError::Private)
        );
        assert_eq!(
            check_url("https://[::1]/x", false),
            Err(TargetError::Private)
        );
        assert_eq!(
            check_url("https://user:pw@example.com/", false),
            Err(TargetError::Invalid)
        );
        assert_eq!(check_url("not a url", false), Err(TargetError::Invalid));
        assert!(check_url("https://hooks.example.com/a?b=c", false).is_ok());
        assert!(check_url("http://127.0.0.1:9000/x", true).is_ok());
        assert_eq!(
            check_url("ftp://127.0.0.1/x", true),
            Err(TargetError::NotHttps)
        );
    }
}
