//! `berth health`: a dependency-free liveness probe for container images
//! that ship no curl (the distroless image runs it as its HEALTHCHECK).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use berth_config::Config;

/// GETs `/livez` on `url` (plain HTTP) or on the configured listen port.
pub fn probe(config: &Config, url: Option<&str>) -> Result<(), String> {
    let (host, addr) = match url {
        Some(u) => {
            let hostport = u.strip_prefix("http://").ok_or("only http:// URLs can be probed")?.trim_end_matches('/');
            let addr = hostport
                .to_socket_addrs()
                .map_err(|e| format!("{hostport}: {e}"))?
                .next()
                .ok_or_else(|| format!("{hostport}: no address"))?;
            (hostport.to_owned(), addr)
        }
        None => {
            let port = config.listen.port();
            let ip = if config.listen.ip().is_unspecified() { [127, 0, 0, 1].into() } else { config.listen.ip() };
            let addr = SocketAddr::new(ip, port);
            (addr.to_string(), addr)
        }
    };
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(stream, "GET /livez HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| format!("{addr}: {e}"))?;
    if head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else {
        Err(format!("{addr}: unhealthy ({})", String::from_utf8_lossy(&head)))
    }
}
