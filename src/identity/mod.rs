//! The saved network identity: who the appliance is on the network, kept in
//! `reprov/identity` on the images partition so a new OS comes up as the old one did.
//!
//! The file is TOML; [`parse`] is a pure function with bounds and validation, and every
//! refusal names the field (and the line, where the TOML parser gives it):
//!
//! ```toml
//! hostname = "web-01"
//! dns = ["192.0.2.53", "2001:db8::53"]
//!
//! [system]
//! model = "PowerEdge R640"
//! serial = "CZ1234"
//!
//! [[interface]]
//! mac = "52:54:00:12:34:56"
//! name = "eth0"
//! addresses = ["192.0.2.10/24", "2001:db8::10/64"]
//! gateway4 = "192.0.2.1"
//! gateway6 = "fe80::1"
//! ```
//!
//! Default gateways belong to an interface (as the routing table has them), so a
//! link-local IPv6 gateway stays meaningful. [`render`] turns an identity into the files
//! a Linux system reads, [`restore`] writes them into a new OS, [`capture`] reads the
//! identity of the running system.

pub mod capture;
pub mod ifupdown;
pub mod render;
pub mod restore;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

pub use capture::{capture_live, dmi};
pub use render::render;
pub use restore::{restore, restore_into, DirSink, FatSink, FileSink};

/// Where the identity lives on the images partition.
pub const IDENTITY_PATH: &str = "reprov/identity";
/// Largest identity file accepted.
pub const MAX_FILE_LEN: usize = 16 * 1024;
/// Most interfaces in one identity.
pub const MAX_INTERFACES: usize = 16;
/// Most addresses on one interface.
pub const MAX_ADDRESSES: usize = 16;
/// Most DNS servers.
pub const MAX_DNS: usize = 8;
/// Longest model or serial number (DMI strings are short).
pub const MAX_SYSTEM_FIELD: usize = 64;
/// Longest default image name (without its extension).
pub const MAX_IMAGE_NAME: usize = 100;

/// What went wrong with an identity: reading, checking, writing or capturing it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the saved identity is too large: {len} bytes read, at most {max} allowed")]
    TooLarge { len: usize, max: usize },
    #[error("the saved identity is not UTF-8 text: {0}")]
    NotText(#[source] std::str::Utf8Error),
    #[error("parsing the saved identity{}: {message}", line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Parse {
        line: Option<usize>,
        message: String,
    },
    #[error("the saved identity is invalid: {field}: {why}")]
    Invalid { field: String, why: String },
    #[error("writing {path} into the new OS: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to write {path} into the new OS: {why}")]
    BadPath { path: String, why: String },
    #[error("reading {path} on the running system: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("running `{command}`: {why}")]
    Command { command: String, why: String },
    #[error("capturing the identity: {what}: {why}")]
    Capture { what: String, why: String },
}

fn invalid(field: impl Into<String>, why: impl Into<String>) -> Error {
    Error::Invalid {
        field: field.into(),
        why: why.into(),
    }
}

/// The saved identity of one appliance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub hostname: Hostname,
    /// DNS servers, in order of preference.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "de_dns"
    )]
    pub dns: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "SystemId::is_empty")]
    pub system: SystemId,
    #[serde(default, rename = "interface", skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
}

/// The system ID from DMI: model (`product_name`) and serial number (`product_serial`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemId {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

impl SystemId {
    fn is_empty(&self) -> bool {
        self.model.is_none() && self.serial.is_none()
    }
}

/// One network interface, recognised by its MAC address (names change between OSes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub mac: MacAddr,
    /// The name it had on the old system (informational; matching is by MAC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<IpNet>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_gateway4"
    )]
    pub gateway4: Option<Ipv4Addr>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_gateway6"
    )]
    pub gateway6: Option<Ipv6Addr>,
}

/// Reads an identity file's bytes: bounded size, UTF-8, then [`parse`].
pub fn parse_bytes(data: &[u8]) -> Result<Identity, Error> {
    if data.len() > MAX_FILE_LEN {
        return Err(Error::TooLarge {
            len: data.len(),
            max: MAX_FILE_LEN,
        });
    }
    parse(std::str::from_utf8(data).map_err(Error::NotText)?)
}

/// Parses and validates identity TOML. Pure.
pub fn parse(text: &str) -> Result<Identity, Error> {
    if text.len() > MAX_FILE_LEN {
        return Err(Error::TooLarge {
            len: text.len(),
            max: MAX_FILE_LEN,
        });
    }
    let identity: Identity = toml::from_str(text).map_err(|e| Error::Parse {
        line: e.span().map(|span| line_of(text, span.start)),
        message: e.message().trim_end().to_string(),
    })?;
    identity.validate()?;
    Ok(identity)
}

/// 1-based line number of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl Identity {
    /// The checks that span fields (counts, uniqueness, free-text fields); the typed
    /// fields check themselves when parsed.
    pub fn validate(&self) -> Result<(), Error> {
        if self.dns.len() > MAX_DNS {
            return Err(invalid(
                "dns",
                format!("{} servers, at most {MAX_DNS} allowed", self.dns.len()),
            ));
        }
        for (i, server) in self.dns.iter().enumerate() {
            check_host_ip(server).map_err(|why| invalid(format!("dns[{i}]"), why))?;
        }
        for (field, value) in [
            ("system.model", &self.system.model),
            ("system.serial", &self.system.serial),
        ] {
            if let Some(value) = value {
                check_system_field(value).map_err(|why| invalid(field, why))?;
            }
        }
        if self.interfaces.len() > MAX_INTERFACES {
            return Err(invalid(
                "interface",
                format!(
                    "{} interfaces, at most {MAX_INTERFACES} allowed",
                    self.interfaces.len()
                ),
            ));
        }
        for (i, iface) in self.interfaces.iter().enumerate() {
            let at = |field: &str| format!("interface[{i}].{field}");
            if let Some(earlier) = self.interfaces[..i].iter().position(|o| o.mac == iface.mac) {
                return Err(invalid(
                    at("mac"),
                    format!("{} is also interface[{earlier}]'s MAC", iface.mac),
                ));
            }
            if let Some(name) = &iface.name {
                check_ifname(name).map_err(|why| invalid(at("name"), why))?;
                let same = |o: &Interface| o.name.as_deref() == Some(name.as_str());
                if let Some(earlier) = self.interfaces[..i].iter().position(same) {
                    return Err(invalid(
                        at("name"),
                        format!("{name:?} is also interface[{earlier}]'s name"),
                    ));
                }
            }
            if iface.addresses.len() > MAX_ADDRESSES {
                return Err(invalid(
                    at("addresses"),
                    format!(
                        "{} addresses, at most {MAX_ADDRESSES} allowed",
                        iface.addresses.len()
                    ),
                ));
            }
            for (j, net) in iface.addresses.iter().enumerate() {
                if iface.addresses[..j].iter().any(|o| o.addr == net.addr) {
                    return Err(invalid(
                        at("addresses"),
                        format!("{} is listed twice", net.addr),
                    ));
                }
            }
            if let Some(gw) = iface.gateway4 {
                check_host_ip(&IpAddr::V4(gw)).map_err(|why| invalid(at("gateway4"), why))?;
            }
            if let Some(gw) = iface.gateway6 {
                check_host_ip(&IpAddr::V6(gw)).map_err(|why| invalid(at("gateway6"), why))?;
            }
        }
        Ok(())
    }

    /// The identity as TOML, in the form [`parse`] reads back.
    pub fn to_toml(&self) -> String {
        // Every field serialises to a TOML string, integer or table: this cannot fail.
        toml::to_string(self).expect("an identity always serialises to TOML")
    }
}

/// An address a host or server may have: not unspecified, loopback or multicast.
fn check_host_ip(ip: &IpAddr) -> Result<(), String> {
    if ip.is_unspecified() {
        Err(format!("{ip} is the unspecified address"))
    } else if ip.is_multicast() {
        Err(format!("{ip} is a multicast address"))
    } else if ip.is_loopback() {
        Err(format!("{ip} is a loopback address"))
    } else {
        Ok(())
    }
}

fn check_system_field(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty (leave it out instead)".into());
    }
    if value.chars().count() > MAX_SYSTEM_FIELD {
        return Err(format!("longer than {MAX_SYSTEM_FIELD} characters"));
    }
    match value.chars().find(|c| c.is_control()) {
        Some(c) => Err(format!("contains the control character {c:?}")),
        None => Ok(()),
    }
}

/// A Linux interface name: 1–15 characters of `[A-Za-z0-9_.-]`, not `.` or `..`.
fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("{name:?} is not 1 to 15 characters long"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not an interface name"));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        Some(c) => Err(format!(
            "{name:?} contains {c:?}; allowed are letters, digits, '_', '.' and '-'"
        )),
        None => Ok(()),
    }
}

/// A host name as RFC 1123 has it: dot-separated labels of 1–63 characters of
/// `[a-z0-9-]`, no label starting or ending with '-', at most 253 characters.
/// Lower case only, so what is written into the new OS is exactly what was checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hostname(String);

impl Hostname {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first label (the short name of a fully qualified one).
    pub fn short(&self) -> &str {
        self.0.split('.').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for Hostname {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Hostname {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("is empty".into());
        }
        if s.len() > 253 {
            return Err(format!("is {} characters, more than 253", s.len()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.')))
        {
            return Err(format!(
                "{s:?} contains {c:?}; a hostname has only a-z, 0-9 and '-' in dot-separated labels"
            ));
        }
        if s.parse::<Ipv4Addr>().is_ok() {
            return Err(format!("{s:?} is an IPv4 address, not a name"));
        }
        for label in s.split('.') {
            if label.is_empty() {
                return Err(format!("{s:?} has an empty label"));
            }
            if label.len() > 63 {
                return Err(format!(
                    "label {label:?} is {} characters, more than 63",
                    label.len()
                ));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(format!("label {label:?} starts or ends with '-'"));
            }
        }
        Ok(Hostname(s.to_string()))
    }
}

/// An Ethernet MAC address, written lower case with colons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The twelve hex digits without colons (for file names).
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a MAC address like 52:54:00:12:34:56");
        let mut bytes = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 || !part.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        if bytes == [0; 6] {
            return Err(format!("{s:?} is the all-zero MAC address"));
        }
        if bytes[0] & 1 == 1 {
            return Err(format!("{s:?} is a multicast MAC address"));
        }
        Ok(MacAddr(bytes))
    }
}

/// An interface address with its prefix length, written `ADDR/PREFIX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} has no prefix length (like 192.0.2.10/24)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{addr:?} in {s:?} is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = match prefix.parse() {
            Ok(p) if (1..=max).contains(&p) => p,
            _ => {
                return Err(format!(
                    "prefix length {prefix:?} in {s:?} is not 1 to {max}"
                ))
            }
        };
        check_host_ip(&addr)?;
        Ok(IpNet { addr, prefix })
    }
}

/// Serialises a type as its `Display` string and parses it back with `FromStr`,
/// naming the field in the error.
macro_rules! string_serde {
    ($type:ty, $field:literal) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse()
                    .map_err(|why| serde::de::Error::custom(format!("{}: {why}", $field)))
            }
        }
    };
}

string_serde!(Hostname, "hostname");
string_serde!(MacAddr, "mac");
string_serde!(IpNet, "addresses");

fn parse_field<T: FromStr, E: serde::de::Error>(
    field: &str,
    kind: &str,
    text: &str,
) -> Result<T, E> {
    text.parse()
        .map_err(|_| E::custom(format!("{field}: {text:?} is not {kind}")))
}

fn de_dns<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    let texts = Vec::<String>::deserialize(d)?;
    texts
        .iter()
        .map(|t| parse_field("dns", "an IPv4 or IPv6 address", t))
        .collect()
}

fn de_gateway4<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv4Addr>, D::Error> {
    parse_field("gateway4", "an IPv4 address", &String::deserialize(d)?).map(Some)
}

fn de_gateway6<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv6Addr>, D::Error> {
    parse_field("gateway6", "an IPv6 address", &String::deserialize(d)?).map(Some)
}

/// The default image name: model and serial number joined (as the patent names an
/// appliance's image), made a safe plain file name: runs of anything outside
/// `[A-Za-z0-9._-]` become one `_`, no leading `.`, at most [`MAX_IMAGE_NAME`] bytes.
pub fn default_image_name(model: &str, serial: &str) -> String {
    let clean = |s: &str| {
        let mut out = String::new();
        for c in s.trim().chars() {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-') {
                out.push(c);
            } else if !out.ends_with('_') {
                out.push('_');
            }
        }
        out.trim_matches(|c| c == '_' || c == '.').to_string()
    };
    let parts: Vec<String> = [clean(model), clean(serial)]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect();
    let mut name = parts.join("_");
    if name.is_empty() {
        name = "appliance".into();
    }
    // Every character is ASCII here, so byte truncation stays on a char boundary.
    name.truncate(MAX_IMAGE_NAME);
    name
}

/// Saves the identity to the images store as [`IDENTITY_PATH`], power-cut safe. Writes.
pub fn save<D: std::io::Read + std::io::Write + std::io::Seek>(
    store: &crate::store::Store<D>,
    identity: &Identity,
) -> crate::Result<()> {
    store.write_identity_text(identity.to_toml().as_bytes())?;
    Ok(())
}

/// Loads and validates the saved identity; `None` when there is none.
pub fn load<D: std::io::Read + std::io::Write + std::io::Seek>(
    store: &crate::store::Store<D>,
) -> crate::Result<Option<Identity>> {
    match store.read_identity_text()? {
        Some(data) => Ok(Some(parse_bytes(&data)?)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests;
