//! Who is connecting, by address: [`ClientAddress`], [`TrustedProxy`], and the walk of
//! `X-Forwarded-For` behind trusted proxies.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use http::{HeaderMap, HeaderName};

/// The `X-Forwarded-For` header a proxy appends the address it got a request from to.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The address of the socket a request came in on, as a request extension: the per-address
/// connection-attempt rate limit of [`Track`](super::Track) reads it.
///
/// `dualcast::serve` inserts it for every request. A host that runs its own server inserts
/// it itself; with axum, from `ConnectInfo`, in one `map_request` in front of the layers
/// (and serve with `into_make_service_with_connect_info::<SocketAddr>()`):
///
/// ```text
/// .layer(axum::middleware::map_request(
///     |ConnectInfo(peer): ConnectInfo<SocketAddr>, mut request: Request| async move {
///         request.extensions_mut().insert(ClientAddress(peer));
///         request
///     },
/// ))
/// ```
///
/// A request without one is not limited per address (the per-player limits still apply).
/// Behind a [trusted proxy](TrustedProxy) the client is read from `X-Forwarded-For`; see
/// the [module docs](super#client-address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddress(pub SocketAddr);

/// A proxy whose `X-Forwarded-For` is believed: one address, or a network in CIDR
/// notation.
///
/// Parsed from `"10.0.0.0/8"`, `"fd00::/8"` or a bare address (`"192.0.2.7"`, `"::1"`, a
/// network of one). Bits past the prefix are ignored (`"10.1.2.3/8"` is `10.0.0.0/8`).
/// An IPv4 address matches an IPv4 network, and an IPv4-mapped IPv6 address
/// (`::ffff:10.0.0.1`) is taken as the IPv4 address it maps.
///
/// ```
/// use dualcast_layers::track::TrustedProxy;
///
/// let network: TrustedProxy = "10.0.0.0/8".parse().unwrap();
/// assert!(network.contains("10.20.30.40".parse().unwrap()));
/// assert!(!network.contains("11.0.0.1".parse().unwrap()));
/// assert_eq!(network.to_string(), "10.0.0.0/8");
///
/// let one: TrustedProxy = "::1".parse().unwrap();
/// assert_eq!(one.to_string(), "::1/128");
/// assert!("10.0.0.0/33".parse::<TrustedProxy>().is_err());
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrustedProxy {
    network: IpAddr,
    prefix_len: u8,
}

impl TrustedProxy {
    /// The network of `address` with a prefix of `prefix_len` bits (at most 32 for IPv4,
    /// 128 for IPv6); `None` past that.
    #[must_use]
    pub fn new(address: IpAddr, prefix_len: u8) -> Option<Self> {
        let address = address.to_canonical();
        let network = match address {
            IpAddr::V4(v4) if prefix_len <= 32 => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::from((u32::from(v4) & mask).to_be_bytes())
            }
            IpAddr::V6(v6) if prefix_len <= 128 => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(prefix_len))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
            }
            _ => return None,
        };
        Some(Self {
            network,
            prefix_len,
        })
    }

    /// The first address of the network.
    #[must_use]
    pub fn network(&self) -> IpAddr {
        self.network
    }

    /// The prefix length in bits.
    #[must_use]
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// `true` when `address` is in this network.
    #[must_use]
    pub fn contains(&self, address: IpAddr) -> bool {
        Self::new(address, self.prefix_len).is_some_and(|own| own.network == self.network)
    }
}

impl From<IpAddr> for TrustedProxy {
    /// The network of this one address.
    fn from(address: IpAddr) -> Self {
        let address = address.to_canonical();
        let prefix_len = if address.is_ipv4() { 32 } else { 128 };
        Self {
            network: address,
            prefix_len,
        }
    }
}

impl FromStr for TrustedProxy {
    type Err = InvalidTrustedProxy;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        match text.split_once('/') {
            None => text
                .parse::<IpAddr>()
                .map(Self::from)
                .map_err(|_| InvalidTrustedProxy),
            Some((address, prefix_len)) => {
                let address = address.parse::<IpAddr>().map_err(|_| InvalidTrustedProxy)?;
                // `u8::from_str` takes a leading `+`; a prefix length is digits only.
                if !prefix_len.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(InvalidTrustedProxy);
                }
                let prefix_len = prefix_len.parse::<u8>().map_err(|_| InvalidTrustedProxy)?;
                // An IPv4-mapped address keeps its IPv6 prefix length.
                match address {
                    IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
                        let prefix_len = prefix_len.checked_sub(96).ok_or(InvalidTrustedProxy)?;
                        Self::new(address, prefix_len).ok_or(InvalidTrustedProxy)
                    }
                    _ => Self::new(address, prefix_len).ok_or(InvalidTrustedProxy),
                }
            }
        }
    }
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

impl fmt::Debug for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustedProxy({self})")
    }
}

/// A [`TrustedProxy`] that does not parse: not an IP address, or a prefix length past the
/// address's bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidTrustedProxy;

impl fmt::Display for InvalidTrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not an IP address or a CIDR network (e.g. 10.0.0.0/8)")
    }
}

impl std::error::Error for InvalidTrustedProxy {}

/// The client of a request that came in from `socket`: the socket's address, or, when that
/// is a trusted proxy, the rightmost `X-Forwarded-For` entry that is not itself trusted.
///
/// The entries of every `X-Forwarded-For` header are walked from the right (the hop
/// nearest this server); an entry that does not parse ends the walk, and the last address
/// read (an entry that was trusted, or the socket) is the client.
pub(super) fn client_ip(socket: IpAddr, headers: &HeaderMap, trusted: &[TrustedProxy]) -> IpAddr {
    let socket = socket.to_canonical();
    let is_trusted = |address: IpAddr| trusted.iter().any(|proxy| proxy.contains(address));
    if !is_trusted(socket) {
        return socket;
    }
    let mut client = socket;
    for header in headers.get_all(X_FORWARDED_FOR).iter().rev() {
        let Ok(header) = header.to_str() else {
            return client;
        };
        for entry in header.rsplit(',') {
            let Some(address) = parse_forwarded_entry(entry.trim()) else {
                return client;
            };
            client = address;
            if !is_trusted(address) {
                return client;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, or an address with a port
/// (`192.0.2.7:4711`, `[2001:db8::1]:4711`), as some proxies write.
fn parse_forwarded_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|socket| socket.ip()))
        .ok()
        .map(|address| address.to_canonical())
}

/// The key an address is rate-limited under: an IPv4 address itself, an IPv6 address by
/// its `/64` (one host's share of a typical allocation: a client can pick any address in
/// its `/64` at will).
pub(super) fn rate_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)))),
    }
}
