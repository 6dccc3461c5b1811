//! Which sockets of the target are connections to the database: the
//! socket inodes behind `/proc/PID/fd`, matched against the target's own
//! view of TCP connections (`/proc/PID/net/tcp` and `tcp6`, its network
//! namespace) whose remote end is the database's address. Parsing is pure;
//! [`database_sockets`] does the reading. Each socket's local port is kept:
//! it is the `client_port` of the connection's row in the server's
//! `pg_stat_activity` (see the database module's statement text recovery).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

/// Where the database listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Every address the host name resolves to (empty: any address).
    pub addrs: Vec<IpAddr>,
    pub port: u16,
}

impl Endpoint {
    fn matches(&self, addr: IpAddr, port: u16) -> bool {
        if port != self.port {
            return false;
        }
        let addr = canonical(addr);
        self.addrs.is_empty() || self.addrs.iter().any(|a| canonical(*a) == addr)
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// One established TCP connection of a `/proc/net/tcp{,6}` table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpConnection {
    pub remote: IpAddr,
    pub remote_port: u16,
    pub local_port: u16,
}

/// Established connections of a `/proc/net/tcp{,6}` table, by socket inode.
pub fn parse_tcp_table(text: &str, v6: bool) -> HashMap<u64, TcpConnection> {
    let mut out = HashMap::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || fields[3] != "01" {
            continue; // not ESTABLISHED
        }
        let Some((addr, port)) = fields[2].split_once(':') else { continue };
        let Ok(port) = u16::from_str_radix(port, 16) else { continue };
        let Some(addr) = parse_hex_addr(addr, v6) else { continue };
        let Some(Ok(local_port)) = fields[1].split_once(':').map(|(_, p)| u16::from_str_radix(p, 16)) else { continue };
        let Ok(inode) = fields[9].parse::<u64>() else { continue };
        if inode != 0 {
            out.insert(inode, TcpConnection { remote: addr, remote_port: port, local_port });
        }
    }
    out
}

/// The kernel prints addresses as 32-bit words in host (little-endian) order.
fn parse_hex_addr(hex: &str, v6: bool) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?.to_le_bytes())
    };
    if v6 {
        let mut b = [0u8; 16];
        for i in 0..4 {
            b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
        }
        Some(IpAddr::V6(Ipv6Addr::from(b)))
    } else {
        Some(IpAddr::V4(Ipv4Addr::from(word(0)?)))
    }
}

/// `socket:[12345]` -> 12345.
pub fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
}

/// The target's file descriptors that are TCP connections to `endpoint`.
pub fn database_fds(pid: u32, endpoint: &Endpoint) -> BTreeSet<u32> {
    database_sockets(pid, endpoint).into_keys().collect()
}

/// The target's TCP connections to `endpoint`: file descriptor -> local port.
pub fn database_sockets(pid: u32, endpoint: &Endpoint) -> BTreeMap<u32, u16> {
    let mut remotes = HashMap::new();
    for (file, v6) in [("tcp", false), ("tcp6", true)] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
            remotes.extend(parse_tcp_table(&text, v6));
        }
    }
    let mut fds = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return fds };
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(link) = std::fs::read_link(entry.path()) else { continue };
        let Some(inode) = link.to_str().and_then(socket_inode) else { continue };
        if let Some(c) = remotes.get(&inode)
            && endpoint.matches(c.remote, c.remote_port) {
                fds.insert(fd, c.local_port);
            }
    }
    fds
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:D431 0100007F:1538 01 00000000:00000000 00:00000000 00000000     0        0 424242 1 0000000000000000 20 4 30 10 -1
   1: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000   109        0 1111 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn established_ipv4_connections_are_read_with_their_remote_end() {
        let t = parse_tcp_table(TCP, false);
        assert_eq!(t.get(&424242), Some(&TcpConnection { remote: IpAddr::V4(Ipv4Addr::LOCALHOST), remote_port: 5432, local_port: 0xD431 }));
        assert!(!t.contains_key(&1111), "listening sockets are not connections");
    }

    #[test]
    fn ipv6_and_mapped_addresses() {
        let line = "  sl header\n   0: 00000000000000000000000001000000:D431 0000000000000000FFFF00000100007F:1538 01 0:0 0:0 0 0 0 77 1\n";
        let t = parse_tcp_table(line, true);
        let TcpConnection { remote: addr, remote_port: port, local_port } = t[&77];
        assert_eq!(local_port, 0xD431);
        assert_eq!(port, 5432);
        let ep = Endpoint { addrs: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)], port: 5432 };
        assert!(ep.matches(addr, port), "{addr}");
        assert!(!ep.matches(addr, 5433));
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[99]"), Some(99));
        assert_eq!(socket_inode("/dev/null"), None);
    }
}
