//! Capturing the running system's identity: pure parsers over the text the system
//! offers (`/proc`, `/sys`, `ip -json`, `resolv.conf`), one pure [`assemble`], and a thin
//! [`read_live`] that gathers the text.

use super::{Error, Hostname, Identity, Interface, IpNet, MacAddr, SystemId, MAX_SYSTEM_FIELD};
use serde::Deserialize;
use std::net::IpAddr;
use std::process::Command;

/// The raw text of the running system that an identity is made from.
#[derive(Debug, Clone, Default)]
pub struct Live {
    /// `/proc/sys/kernel/hostname`.
    pub hostname: String,
    /// `/sys/class/dmi/id/product_name` and `product_serial`, when present.
    pub product_name: Option<String>,
    pub product_serial: Option<String>,
    /// `(name, contents of /sys/class/net/<name>/address)` for each link.
    pub links: Vec<(String, String)>,
    /// Output of `ip -json addr show`.
    pub ip_addr: String,
    /// Output of `ip -json route show default` and `ip -6 -json route show default`.
    pub routes4: String,
    pub routes6: String,
    /// The resolv.conf that names the real servers.
    pub resolv_conf: String,
}

/// Builds and validates the identity from the system's text. Pure.
///
/// Interfaces are the links with a MAC (not `lo`) that have a global address or a
/// default gateway — a link with neither has nothing to restore.
pub fn assemble(live: &Live) -> Result<Identity, Error> {
    let hostname = parse_hostname(&live.hostname)?;
    let links = parse_ip_addr_json(&live.ip_addr)?;
    let routes4 = parse_ip_route_json(&live.routes4)?;
    let routes6 = parse_ip_route_json(&live.routes6)?;
    let mut sys_links: Vec<&(String, String)> = live.links.iter().collect();
    sys_links.sort();
    let mut interfaces = Vec::new();
    for (name, address) in sys_links {
        let Some(mac) = parse_sys_mac(address).filter(|_| name != "lo") else {
            continue;
        };
        let addresses = links
            .iter()
            .find(|l| &l.name == name)
            .map(|l| l.addresses.clone())
            .unwrap_or_default();
        let gateway =
            |routes: &[(String, IpAddr)]| routes.iter().find(|(dev, _)| dev == name).map(|r| r.1);
        let gateway4 = match gateway(&routes4) {
            Some(IpAddr::V4(gw)) => Some(gw),
            _ => None,
        };
        let gateway6 = match gateway(&routes6) {
            Some(IpAddr::V6(gw)) => Some(gw),
            _ => None,
        };
        if addresses.is_empty() && gateway4.is_none() && gateway6.is_none() {
            continue;
        }
        interfaces.push(Interface {
            mac,
            name: super::check_ifname(name).is_ok().then(|| name.clone()),
            addresses,
            gateway4,
            gateway6,
        });
    }
    let identity = Identity {
        hostname,
        dns: parse_resolv_conf(&live.resolv_conf),
        system: SystemId {
            model: live.product_name.as_deref().and_then(parse_dmi),
            serial: live.product_serial.as_deref().and_then(parse_dmi),
        },
        interfaces,
    };
    identity.validate()?;
    Ok(identity)
}

/// The kernel's hostname, lower-cased (DNS names are case-insensitive; the identity
/// keeps the lower-case form).
pub fn parse_hostname(text: &str) -> Result<Hostname, Error> {
    let name = text.trim().to_ascii_lowercase();
    name.parse().map_err(|why| Error::Capture {
        what: "hostname".into(),
        why: format!("the running system's hostname {why}"),
    })
}

/// A DMI string: trimmed, control characters dropped, at most [`MAX_SYSTEM_FIELD`]
/// characters; `None` when nothing is left.
pub fn parse_dmi(text: &str) -> Option<String> {
    let clean: String = text
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_SYSTEM_FIELD)
        .collect();
    let clean = clean.trim().to_string();
    (!clean.is_empty()).then_some(clean)
}

/// `/sys/class/net/<name>/address`; `None` for links without an Ethernet MAC.
pub fn parse_sys_mac(text: &str) -> Option<MacAddr> {
    text.trim().parse().ok()
}

/// One link as `ip -json addr show` lists it, with the addresses worth restoring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpLink {
    pub name: String,
    pub addresses: Vec<IpNet>,
}

#[derive(Deserialize)]
struct JsonLink {
    ifname: String,
    #[serde(default)]
    addr_info: Vec<JsonAddr>,
}

#[derive(Deserialize)]
struct JsonAddr {
    #[serde(default)]
    family: String,
    #[serde(default)]
    local: Option<String>,
    #[serde(default)]
    prefixlen: Option<u8>,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    temporary: bool,
}

/// Parses `ip -json addr show`. Keeps global IPv4/IPv6 addresses; skips loopback,
/// link-local (fe80::/10, 169.254/16) and temporary (privacy) addresses. Pure.
pub fn parse_ip_addr_json(text: &str) -> Result<Vec<IpLink>, Error> {
    let links: Vec<JsonLink> = serde_json::from_str(text).map_err(|e| Error::Capture {
        what: "the output of `ip -json addr show`".into(),
        why: e.to_string(),
    })?;
    Ok(links
        .into_iter()
        .map(|link| IpLink {
            name: link.ifname,
            addresses: link
                .addr_info
                .iter()
                .filter(|a| matches!(a.family.as_str(), "inet" | "inet6"))
                .filter(|a| !matches!(a.scope.as_str(), "host" | "link") && !a.temporary)
                .filter_map(|a| {
                    let addr: IpAddr = a.local.as_deref()?.parse().ok()?;
                    let net = IpNet {
                        addr,
                        prefix: a.prefixlen?,
                    };
                    // The same checks as the identity file gets, and no link-local.
                    net.to_string().parse::<IpNet>().ok()?;
                    (!is_link_local(&addr)).then_some(net)
                })
                .collect(),
        })
        .collect())
}

fn is_link_local(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

#[derive(Deserialize)]
struct JsonRoute {
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    dev: Option<String>,
}

/// Parses `ip -json route show default` (or `-6`): `(device, gateway)` in table order,
/// skipping routes without a gateway or device. Pure.
pub fn parse_ip_route_json(text: &str) -> Result<Vec<(String, IpAddr)>, Error> {
    // `ip` prints nothing at all (not `[]`) on some versions when there is no route.
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let routes: Vec<JsonRoute> = serde_json::from_str(text).map_err(|e| Error::Capture {
        what: "the output of `ip -json route show default`".into(),
        why: e.to_string(),
    })?;
    Ok(routes
        .into_iter()
        .filter_map(|r| Some((r.dev?, r.gateway?.parse().ok()?)))
        .collect())
}

/// The `nameserver` lines of a resolv.conf, in order, without duplicates, loopback
/// stubs (127.0.0.53 of systemd-resolved: it would mean nothing on the new OS) or
/// scoped addresses (`fe80::1%eth0`). Pure.
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    let mut servers = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(Ok(ip)) = words.next().map(str::parse::<IpAddr>) else {
            continue;
        };
        if !ip.is_loopback() && !ip.is_unspecified() && !servers.contains(&ip) {
            servers.push(ip);
        }
    }
    servers
}

/// Reads the running system's text for [`assemble`]. Reads only.
pub fn read_live() -> Result<Live, Error> {
    let mut links = Vec::new();
    let net = "/sys/class/net";
    let entries = std::fs::read_dir(net).map_err(read_error(net))?;
    for entry in entries {
        let entry = entry.map_err(read_error(net))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = format!("{net}/{name}/address");
        if let Some(address) = read_optional(&path)? {
            links.push((name, address));
        }
    }
    let etc_resolv = read_optional("/etc/resolv.conf")?.unwrap_or_default();
    // With systemd-resolved, /etc/resolv.conf names only its stub; the real servers
    // are in its own file.
    let resolv_conf = match parse_resolv_conf(&etc_resolv).is_empty() {
        true => read_optional("/run/systemd/resolve/resolv.conf")?.unwrap_or(etc_resolv),
        false => etc_resolv,
    };
    let hostname = "/proc/sys/kernel/hostname";
    Ok(Live {
        hostname: std::fs::read_to_string(hostname).map_err(read_error(hostname))?,
        product_name: read_optional("/sys/class/dmi/id/product_name")?,
        product_serial: read_optional("/sys/class/dmi/id/product_serial")?,
        links,
        ip_addr: run_ip(&["-json", "addr", "show"])?,
        routes4: run_ip(&["-4", "-json", "route", "show", "default"])?,
        routes6: run_ip(&["-6", "-json", "route", "show", "default"])?,
        resolv_conf,
    })
}

/// A DMI field of this machine (`product_name`, `product_serial`) as [`parse_dmi`]
/// cleans it; `None` when the firmware has none or it cannot be read (the serial needs
/// root). Reads only.
pub fn dmi(field: &str) -> Option<String> {
    std::fs::read_to_string(format!("/sys/class/dmi/id/{field}"))
        .ok()
        .and_then(|text| parse_dmi(&text))
}

/// Captures the running system's identity. Reads only.
pub fn capture_live() -> Result<Identity, Error> {
    assemble(&read_live()?)
}

fn read_error(path: &str) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Read {
        path: path.to_string(),
        source,
    }
}

/// A file's text, `None` when it does not exist (other errors, such as a serial number
/// readable only by root, are reported).
fn read_optional(path: &str) -> Result<Option<String>, Error> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(read_error(path)(e)),
    }
}

fn run_ip(args: &[&str]) -> Result<String, Error> {
    let command = format!("ip {}", args.join(" "));
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::Command {
            command: command.clone(),
            why: format!("{e} (is iproute2 installed?)"),
        })?;
    if !output.status.success() {
        return Err(Error::Command {
            command,
            why: format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    String::from_utf8(output.stdout).map_err(|e| Error::Command {
        command,
        why: format!("output is not UTF-8: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Real output of `ip -json addr show` on a build container (trimmed to the fields
    // that matter plus a few that do not).
    const IP_ADDR: &str = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"link_type":"loopback","address":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host","label":"lo"},{"family":"inet6","local":"::1","prefixlen":128,"scope":"host"}]},{"ifindex":2,"ifname":"ifb0","flags":["BROADCAST","NOARP"],"link_type":"ether","address":"9a:f9:62:fa:7a:5b","addr_info":[]},{"ifindex":4,"ifname":"eth0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"mtu":1400,"link_type":"ether","address":"02:fc:00:00:00:01","addr_info":[{"family":"inet","local":"192.0.2.2","prefixlen":24,"broadcast":"192.0.2.255","scope":"global","label":"eth0","valid_life_time":4294967295},{"family":"inet6","local":"fd00::2","prefixlen":64,"scope":"global","nodad":true},{"family":"inet6","local":"2001:db8::1234","prefixlen":64,"scope":"global","temporary":true,"dynamic":true},{"family":"inet6","local":"fe80::fc:ff:fe00:1","prefixlen":64,"scope":"link"}]}]"#;
    const ROUTES4: &str = r#"[{"dst":"default","gateway":"192.0.2.1","dev":"eth0","flags":[]}]"#;
    const ROUTES6: &str = r#"[{"dst":"default","gateway":"fd00::1","dev":"eth0","metric":1024,"flags":[],"pref":"medium"}]"#;

    fn live() -> Live {
        Live {
            hostname: "Build-Box\n".into(),
            product_name: Some("Standard PC (i440FX + PIIX, 1996)\n".into()),
            product_serial: None,
            links: vec![
                ("lo".into(), "00:00:00:00:00:00\n".into()),
                ("ifb0".into(), "9a:f9:62:fa:7a:5b\n".into()),
                ("eth0".into(), "02:fc:00:00:00:01\n".into()),
            ],
            ip_addr: IP_ADDR.into(),
            routes4: ROUTES4.into(),
            routes6: ROUTES6.into(),
            resolv_conf: "# generated\nsearch example.com\nnameserver 127.0.0.53\n\
                          nameserver 10.255.255.53\nnameserver fe80::1%eth0\n"
                .into(),
        }
    }

    #[test]
    fn assembles_the_identity_of_a_running_system() {
        let identity = assemble(&live()).unwrap();
        let expected = r#"hostname = "build-box"
dns = ["10.255.255.53"]

[system]
model = "Standard PC (i440FX + PIIX, 1996)"

[[interface]]
mac = "02:fc:00:00:00:01"
name = "eth0"
addresses = ["192.0.2.2/24", "fd00::2/64"]
gateway4 = "192.0.2.1"
gateway6 = "fd00::1"
"#;
        assert_eq!(identity.to_toml(), expected);
        // What capture prints, the parser reads back unchanged.
        assert_eq!(super::super::parse(expected).unwrap(), identity);
    }

    #[test]
    fn a_bad_live_hostname_is_reported() {
        let live = Live {
            hostname: "bad_name\n".into(),
            ..live()
        };
        let error = assemble(&live).unwrap_err().to_string();
        assert!(
            error.contains("hostname") && error.contains("'_'"),
            "{error}"
        );
    }

    #[test]
    fn ip_addr_keeps_only_global_stable_addresses() {
        let links = parse_ip_addr_json(IP_ADDR).unwrap();
        let eth0 = links.iter().find(|l| l.name == "eth0").unwrap();
        let addrs: Vec<String> = eth0.addresses.iter().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["192.0.2.2/24", "fd00::2/64"]);
        let lo = links.iter().find(|l| l.name == "lo").unwrap();
        assert!(lo.addresses.is_empty());
        assert!(parse_ip_addr_json("not json").is_err());
    }

    #[test]
    fn default_routes() {
        let cases: [(&str, Vec<(&str, &str)>); 4] = [
            (ROUTES4, vec![("eth0", "192.0.2.1")]),
            (ROUTES6, vec![("eth0", "fd00::1")]),
            ("", vec![]),
            (
                r#"[{"dst":"default","dev":"wg0"},{"dst":"default","gateway":"10.0.0.1","dev":"eth1"}]"#,
                vec![("eth1", "10.0.0.1")],
            ),
        ];
        for (text, expected) in cases {
            let routes = parse_ip_route_json(text).unwrap();
            let expected: Vec<(String, IpAddr)> = expected
                .into_iter()
                .map(|(d, g)| (d.to_string(), g.parse().unwrap()))
                .collect();
            assert_eq!(routes, expected, "{text}");
        }
    }

    #[test]
    fn resolv_conf() {
        let cases: [(&str, &[&str]); 4] = [
            ("nameserver 192.0.2.53\n", &["192.0.2.53"]),
            (
                "# c\n;x\nnameserver  2001:db8::53 \nnameserver 192.0.2.53\nnameserver 192.0.2.53\n",
                &["2001:db8::53", "192.0.2.53"],
            ),
            ("nameserver 127.0.0.53\noptions edns0\n", &[]),
            ("nameserver\nnameserver bogus\n#nameserver 192.0.2.1\n", &[]),
        ];
        for (text, expected) in cases {
            let servers: Vec<String> = parse_resolv_conf(text)
                .iter()
                .map(|s| s.to_string())
                .collect();
            assert_eq!(servers, expected, "{text}");
        }
    }

    #[test]
    fn dmi_strings() {
        let cases = [
            ("PowerEdge R640\n", Some("PowerEdge R640")),
            ("  \n", None),
            ("", None),
            ("a\u{7}b", Some("ab")),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_dmi(text).as_deref(), expected, "{text:?}");
        }
        assert_eq!(parse_dmi(&"x".repeat(200)).unwrap().len(), MAX_SYSTEM_FIELD);
    }
}
