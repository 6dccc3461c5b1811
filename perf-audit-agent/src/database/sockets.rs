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
///
/// Established connections come from the kernel's socket diagnostics
/// (netlink `SOCK_DIAG_BY_FAMILY`, as `ss` reads them: only ESTABLISHED
/// sockets, filtered in the kernel) when the target shares the agent's
/// network namespace; otherwise from `/proc/PID/net/tcp{,6}`, which lists
/// every socket of the namespace. On a server that closes a connection per
/// request those tables hold tens of thousands of TIME_WAIT lines: measured
/// during the 600 requests/s database test, ~11,000 lines, 10-30 ms per
/// read, every 50 ms, and the agent used 62-88% of a core.
pub fn database_sockets(pid: u32, endpoint: &Endpoint) -> BTreeMap<u32, u16> {
    let remotes = match same_network_namespace(pid).then(established_connections).flatten() {
        Some(remotes) => remotes,
        None => {
            let mut remotes = HashMap::new();
            for (file, v6) in [("tcp", false), ("tcp6", true)] {
                if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
                    remotes.extend(parse_tcp_table(&text, v6));
                }
            }
            remotes
        }
    };
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

/// The socket inode behind the target's `fd`, when it is a socket.
pub fn fd_inode(pid: u32, fd: u32) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    socket_inode(link.to_str()?)
}

/// The remote end (`address:port`) of the target's established TCP
/// connection with socket inode `inode` (`None`: not found, e.g. closed).
pub fn tcp_peer(pid: u32, inode: u64) -> Option<String> {
    let remotes = match same_network_namespace(pid).then(established_connections).flatten() {
        Some(r) => r,
        None => {
            let mut remotes = HashMap::new();
            for (file, v6) in [("tcp", false), ("tcp6", true)] {
                if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) {
                    remotes.extend(parse_tcp_table(&text, v6));
                }
            }
            remotes
        }
    };
    let c = remotes.get(&inode)?;
    Some(match canonical(c.remote) {
        IpAddr::V6(v6) => format!("[{v6}]:{}", c.remote_port),
        v4 => format!("{v4}:{}", c.remote_port),
    })
}

fn same_network_namespace(pid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let ino = |p: String| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    matches!((ino("/proc/self/ns/net".into()), ino(format!("/proc/{pid}/ns/net"))), (Some(a), Some(b)) if a == b)
}

const NETLINK_SOCK_DIAG: i32 = 4;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_ESTABLISHED: u32 = 1;
/// `struct nlmsghdr`.
const NLMSG_HDR: usize = 16;
/// `struct inet_diag_msg`: family, state, timer, retrans, then
/// `inet_diag_sockid` (sport, dport: big-endian u16; src, dst: 16 bytes
/// each; interface; cookie), expires, rqueue, wqueue, uid, inode.
const DIAG_MSG_DPORT: usize = 6;
const DIAG_MSG_SPORT: usize = 4;
const DIAG_MSG_DST: usize = 24;
const DIAG_MSG_INODE: usize = 68;
const DIAG_MSG_LEN: usize = 72;

/// Established TCP connections of the agent's network namespace, by socket
/// inode, from the kernel's socket diagnostics; `None` when netlink is
/// unavailable (the caller reads /proc instead).
fn established_connections() -> Option<HashMap<u64, TcpConnection>> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the result is owned below.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, NETLINK_SOCK_DIAG) };
    if raw < 0 {
        return None;
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut out = HashMap::new();
    for (seq, family) in [(1u32, libc::AF_INET as u8), (2, libc::AF_INET6 as u8)] {
        // nlmsghdr + inet_diag_req_v2 (family, protocol, ext, pad, states, sockid).
        let mut req = [0u8; NLMSG_HDR + 56];
        let len = req.len() as u32;
        req[0..4].copy_from_slice(&len.to_ne_bytes());
        req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        req[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        req[8..12].copy_from_slice(&seq.to_ne_bytes());
        req[NLMSG_HDR] = family;
        req[NLMSG_HDR + 1] = libc::IPPROTO_TCP as u8;
        req[NLMSG_HDR + 4..NLMSG_HDR + 8].copy_from_slice(&(1u32 << TCP_ESTABLISHED).to_ne_bytes());
        // SAFETY: sends `req`, a valid buffer, to the kernel (no address:
        // a netlink socket's default peer is the kernel).
        if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
            return None;
        }
        let mut buf = vec![0u8; 64 * 1024];
        'dump: loop {
            // SAFETY: receives into `buf`, a valid buffer of its length.
            let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                return None;
            }
            let mut at = 0usize;
            let n = n as usize;
            while at + NLMSG_HDR <= n {
                let msg_len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(buf[at + 4..at + 6].try_into().expect("2 bytes"));
                if msg_len < NLMSG_HDR || at + msg_len > n {
                    return None;
                }
                match kind {
                    NLMSG_DONE => break 'dump,
                    NLMSG_ERROR => return None,
                    SOCK_DIAG_BY_FAMILY if msg_len >= NLMSG_HDR + DIAG_MSG_LEN => {
                        let m = &buf[at + NLMSG_HDR..at + msg_len];
                        if let Some((inode, c)) = parse_diag_msg(m) {
                            out.insert(inode, c);
                        }
                    }
                    _ => {}
                }
                at += (msg_len + 3) & !3;
            }
        }
    }
    Some(out)
}

/// One `inet_diag_msg`: (socket inode, its connection).
fn parse_diag_msg(m: &[u8]) -> Option<(u64, TcpConnection)> {
    let m = m.get(..DIAG_MSG_LEN)?;
    let port = |at: usize| u16::from_be_bytes([m[at], m[at + 1]]);
    let remote = match m[0] as i32 {
        libc::AF_INET => IpAddr::V4(Ipv4Addr::new(m[DIAG_MSG_DST], m[DIAG_MSG_DST + 1], m[DIAG_MSG_DST + 2], m[DIAG_MSG_DST + 3])),
        libc::AF_INET6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(&m[DIAG_MSG_DST..DIAG_MSG_DST + 16]).ok()?)),
        _ => return None,
    };
    let inode = u32::from_ne_bytes(m[DIAG_MSG_INODE..DIAG_MSG_INODE + 4].try_into().ok()?) as u64;
    (inode != 0).then_some((inode, TcpConnection { remote, remote_port: port(DIAG_MSG_DPORT), local_port: port(DIAG_MSG_SPORT) }))
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

    /// The kernel's socket diagnostics and /proc agree on a connection this
    /// test makes, and netlink lists no TIME_WAIT socket.
    #[test]
    fn socket_diagnostics_see_an_established_connection_like_proc() {
        use std::os::unix::fs::MetadataExt;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::net::TcpStream::connect(addr).unwrap();
        let _server = listener.accept().unwrap();
        let inode = std::fs::metadata(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&client))).unwrap().ino();
        let diag = established_connections().expect("netlink sock_diag");
        let c = diag.get(&inode).unwrap_or_else(|| panic!("inode {inode} not in {} connections", diag.len()));
        assert_eq!((c.remote, c.remote_port, c.local_port), (addr.ip(), addr.port(), client.local_addr().unwrap().port()));
        let proc = parse_tcp_table(&std::fs::read_to_string("/proc/self/net/tcp").unwrap(), false);
        assert_eq!(proc.get(&inode), Some(c));
        let pid = std::process::id();
        assert!(same_network_namespace(pid));
        let endpoint = Endpoint { addrs: vec![addr.ip()], port: addr.port() };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&client) as u32;
        assert_eq!(database_sockets(pid, &endpoint).get(&fd), Some(&client.local_addr().unwrap().port()));
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[99]"), Some(99));
        assert_eq!(socket_inode("/dev/null"), None);
    }
}
