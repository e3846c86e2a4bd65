//! Who is on the other end of a request: the client's address (for login
//! limits and audit lines) and, behind a reverse proxy, the scheme and host
//! the client used (for the auth realm when `public_url` is empty).
//!
//! Forwarding headers are believed only from `http.trusted_proxies`; from
//! anyone else they are ignored, so a client cannot pose as another address.
//! The client address is the rightmost hop that is not itself a trusted
//! proxy: each proxy appends the address it saw, so everything to the left
//! of the first untrusted hop was written by someone we cannot vouch for.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use http::header::{FORWARDED, HOST};
use ipnet::IpNet;

const X_FORWARDED_FOR: &str = "x-forwarded-for";
const X_FORWARDED_PROTO: &str = "x-forwarded-proto";
const X_FORWARDED_HOST: &str = "x-forwarded-host";

/// What the connection loop and the trusted proxies say about a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// The client's address: the peer, or the forwarded client behind a trusted proxy.
    pub ip: Option<IpAddr>,
    /// `scheme://host` the client used, when a trusted proxy said so.
    pub origin: Option<String>,
}

/// The client behind `peer`, given the request's headers.
pub fn resolve(trusted: &[IpNet], tls: bool, peer: Option<IpAddr>, h: &HeaderMap) -> ClientInfo {
    let Some(peer) = peer else { return ClientInfo::default() };
    if !is_trusted(trusted, peer) {
        return ClientInfo { ip: Some(peer), origin: None };
    }
    let forwarded = header_values(h, FORWARDED.as_str());
    let elements: Vec<Vec<(String, String)>> = forwarded.iter().flat_map(|v| parse_forwarded(v)).collect();
    let hops: Vec<Option<IpAddr>> = if elements.is_empty() {
        header_values(h, X_FORWARDED_FOR).iter().flat_map(|v| v.split(',')).map(|s| parse_node(s.trim())).collect()
    } else {
        elements.iter().map(|e| field(e, "for").and_then(parse_node)).collect()
    };
    let mut ip = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(addr) => {
                ip = *addr;
                if !is_trusted(trusted, *addr) {
                    break;
                }
            }
            // An unreadable hop: nothing left of it can be vouched for.
            None => break,
        }
    }
    let first = elements.first();
    let proto = first
        .and_then(|e| field(e, "proto"))
        .or_else(|| header_values(h, X_FORWARDED_PROTO).first().and_then(|v| v.split(',').next()).map(str::trim))
        .map(str::to_ascii_lowercase)
        .filter(|p| p == "http" || p == "https");
    let forwarded_host = first
        .and_then(|e| field(e, "host"))
        .or_else(|| header_values(h, X_FORWARDED_HOST).first().and_then(|v| v.split(',').next()).map(str::trim))
        .filter(|host| valid_host(host));
    let origin = (proto.is_some() || forwarded_host.is_some()).then(|| {
        let scheme = proto.unwrap_or_else(|| if tls { "https".into() } else { "http".into() });
        let host = forwarded_host
            .map(str::to_owned)
            .or_else(|| h.get(HOST).and_then(|v| v.to_str().ok()).filter(|v| valid_host(v)).map(str::to_owned))
            .unwrap_or_else(|| "localhost".into());
        format!("{scheme}://{host}")
    });
    ClientInfo { ip: Some(ip), origin }
}

fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    trusted.iter().any(|net| net.contains(&ip))
}

fn header_values<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    h.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect()
}

/// A host name or address with an optional port: nothing that could break
/// out of a quoted header value or a URL's authority.
pub fn valid_host(host: &str) -> bool {
    !host.is_empty() && host.len() <= 255 && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
}

/// RFC 7239 `Forwarded`: comma-separated elements of `key=value` pairs
/// separated by `;`, values optionally quoted.
fn parse_forwarded(value: &str) -> Vec<Vec<(String, String)>> {
    value
        .split(',')
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    let v = v.trim();
                    let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
                    Some((k.trim().to_ascii_lowercase(), v.to_owned()))
                })
                .collect()
        })
        .collect()
}

fn field<'a>(element: &'a [(String, String)], key: &str) -> Option<&'a str> {
    element.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A node: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]:4711` or `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sock) = node.parse::<SocketAddr>() {
        return Some(sock.ip());
    }
    node.strip_prefix('[').and_then(|n| n.strip_suffix(']')).and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn headers_from_untrusted_peers_are_ignored() {
        let h = headers(&[("x-forwarded-for", "203.0.113.9"), ("x-forwarded-proto", "https")]);
        let info = resolve(&nets(&["10.0.0.0/8"]), false, ip("192.0.2.1"), &h);
        assert_eq!(info, ClientInfo { ip: ip("192.0.2.1"), origin: None });
        assert_eq!(resolve(&[], false, ip("10.0.0.1"), &h).ip, ip("10.0.0.1"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted = nets(&["10.0.0.0/8"]);
        // The client spoofs a first entry; the proxy appends what it saw.
        let h = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.7"), ("x-forwarded-for", "10.1.1.1")]);
        assert_eq!(resolve(&trusted, false, ip("10.0.0.2"), &h).ip, ip("198.51.100.7"));
        let h = headers(&[("forwarded", r#"for=1.2.3.4, for="[2001:db8::7]:4711";proto=https, for=10.2.2.2"#)]);
        assert_eq!(resolve(&trusted, false, ip("10.0.0.2"), &h).ip, ip("2001:db8::7"));
        // Only trusted hops: the leftmost of them.
        let h = headers(&[("x-forwarded-for", "10.3.3.3, 10.4.4.4")]);
        assert_eq!(resolve(&trusted, false, ip("10.0.0.2"), &h).ip, ip("10.3.3.3"));
        // Garbage stops the walk at the last readable trusted hop.
        let h = headers(&[("x-forwarded-for", "198.51.100.1, garbage, 10.5.5.5")]);
        assert_eq!(resolve(&trusted, false, ip("10.0.0.2"), &h).ip, ip("10.5.5.5"));
    }

    #[test]
    fn origin_comes_from_trusted_forwarding_headers() {
        let trusted = nets(&["127.0.0.1/32"]);
        let h = headers(&[("host", "berth:5000"), ("x-forwarded-proto", "https"), ("x-forwarded-host", "reg.example")]);
        assert_eq!(resolve(&trusted, false, ip("127.0.0.1"), &h).origin.as_deref(), Some("https://reg.example"));
        let h = headers(&[("host", "reg.example"), ("x-forwarded-proto", "https")]);
        assert_eq!(resolve(&trusted, false, ip("127.0.0.1"), &h).origin.as_deref(), Some("https://reg.example"));
        let h = headers(&[("host", "x"), ("forwarded", "for=1.2.3.4;proto=https;host=reg.example:8443")]);
        assert_eq!(resolve(&trusted, false, ip("127.0.0.1"), &h).origin.as_deref(), Some("https://reg.example:8443"));
        // A host that would break the realm's quoting is ignored.
        let h = headers(&[("host", "ok.example"), ("x-forwarded-host", "evil\"x"), ("x-forwarded-proto", "https")]);
        assert_eq!(resolve(&trusted, false, ip("127.0.0.1"), &h).origin.as_deref(), Some("https://ok.example"));
        let h = headers(&[("x-forwarded-proto", "gopher")]);
        assert_eq!(resolve(&trusted, false, ip("127.0.0.1"), &h).origin, None);
    }
}
