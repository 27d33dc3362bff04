//! The identity in the forms Linux systems read: `/etc/hostname`, `/etc/hosts`, one
//! systemd-networkd file per interface (matched by MAC), and a cloud-init NoCloud seed,
//! so both a systemd-networkd OS and a stock cloud image come up with it unchanged.
//! Everything here is pure: files are returned, not written.

use super::{Identity, Interface};
use std::fmt::Write as _;
use std::net::IpAddr;

pub const HOSTNAME_PATH: &str = "/etc/hostname";
pub const HOSTS_PATH: &str = "/etc/hosts";
pub const NETWORKD_DIR: &str = "/etc/systemd/network";
pub const NOCLOUD_DIR: &str = "/var/lib/cloud/seed/nocloud";

const HEADER: &str = "# Written by reprov from the saved identity (reprov/identity).\n";

/// Every file of the identity, as `(absolute path, contents)`, in a stable order.
pub fn render(identity: &Identity) -> Vec<(String, String)> {
    let mut files = vec![
        (HOSTNAME_PATH.to_string(), hostname_file(identity)),
        (HOSTS_PATH.to_string(), hosts_file(identity)),
    ];
    for iface in &identity.interfaces {
        files.push((
            networkd_path(iface),
            networkd_file(iface, dns_for(identity, iface)),
        ));
    }
    files.push((format!("{NOCLOUD_DIR}/meta-data"), meta_data(identity)));
    // NoCloud reads a seed directory only when user-data is there too.
    files.push((
        format!("{NOCLOUD_DIR}/user-data"),
        "#cloud-config\n{}\n".into(),
    ));
    files.push((
        format!("{NOCLOUD_DIR}/network-config"),
        network_config(identity),
    ));
    files
}

/// `/etc/systemd/network/00-reprov-<mac without colons>.network`: networkd takes the
/// first matching file in lexical order, so it must sort before the new OS's own files.
pub fn networkd_path(iface: &Interface) -> String {
    format!("{NETWORKD_DIR}/00-reprov-{}.network", iface.mac.hex())
}

pub fn hostname_file(identity: &Identity) -> String {
    format!("{}\n", identity.hostname)
}

/// The host's names as `/etc/hosts` lists them: the name, and its short form when it is
/// fully qualified.
fn host_names(identity: &Identity) -> String {
    let name = identity.hostname.as_str();
    let short = identity.hostname.short();
    if short == name {
        name.to_string()
    } else {
        format!("{name} {short}")
    }
}

/// Debian's layout: the host's own name on 127.0.1.1, with its short form when it is
/// fully qualified. What a new OS without an `/etc/hosts` of its own gets.
pub fn hosts_file(identity: &Identity) -> String {
    let names = host_names(identity);
    format!(
        "{HEADER}127.0.0.1\tlocalhost\n127.0.1.1\t{names}\n\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    )
}

/// The new OS's `/etc/hosts` (`existing`, as its image brought it) with the saved host
/// name. Only the loopback lines that name the host change: the `127.0.1.1` line
/// (Debian's place for it) is replaced, or added after `127.0.0.1` when there is none,
/// and `old_hostname` (the image's own name, from its `/etc/hostname`) gives way to the
/// saved one on the other loopback lines. Every other line — the application's own
/// hosts, comments — stays as it was. Without a file: [`hosts_file`]. Pure.
pub fn edit_hosts(
    existing: Option<&str>,
    old_hostname: Option<&str>,
    identity: &Identity,
) -> String {
    let Some(text) = existing else {
        return hosts_file(identity);
    };
    let names = host_names(identity);
    let new: Vec<&str> = names.split(' ').collect();
    let old: Vec<&str> = old_hostname
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| vec![name, name.split('.').next().unwrap_or(name)])
        .unwrap_or_default();
    let own_line = format!("127.0.1.1\t{names}");
    let mut lines: Vec<String> = Vec::new();
    let mut placed = false;
    for line in text.lines() {
        let (body, comment) = line
            .split_once('#')
            .map_or((line, None), |(b, c)| (b, Some(c)));
        let mut fields = body.split_whitespace();
        let address = fields.next();
        let loopback = address
            .and_then(|a| a.parse::<IpAddr>().ok())
            .is_some_and(|a| a.is_loopback());
        if !loopback {
            lines.push(line.to_string());
            continue;
        }
        let address = address.unwrap_or_default();
        if address == "127.0.1.1" {
            if !placed {
                lines.push(own_line.clone());
                placed = true;
            }
            continue;
        }
        let listed: Vec<&str> = fields.collect();
        let kept: Vec<&str> = listed
            .iter()
            .copied()
            .filter(|n| !old.contains(n) && !new.contains(n))
            .collect();
        if kept.len() == listed.len() {
            lines.push(line.to_string());
            continue;
        }
        let mut edited = format!("{address}\t{}", [kept, new.clone()].concat().join(" "));
        if let Some(comment) = comment {
            edited.push_str(&format!(" #{comment}"));
        }
        lines.push(edited);
    }
    if !placed {
        let after = lines
            .iter()
            .position(|l| l.split_whitespace().next() == Some("127.0.0.1"))
            .map_or(0, |at| at + 1);
        lines.insert(after, own_line);
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

/// The DNS servers `iface` carries: they go on the interfaces that have a default
/// gateway (the way out to them); when none has one, on every interface.
pub(super) fn dns_for<'a>(identity: &'a Identity, iface: &Interface) -> &'a [IpAddr] {
    let has_gateway = |i: &Interface| i.gateway4.is_some() || i.gateway6.is_some();
    if has_gateway(iface) || !identity.interfaces.iter().any(has_gateway) {
        &identity.dns
    } else {
        &[]
    }
}

/// A systemd-networkd file for one interface. `Type=ether` keeps VLANs, which share
/// their parent's MAC, from matching too.
pub fn networkd_file(iface: &Interface, dns: &[IpAddr]) -> String {
    let mut out = format!(
        "{HEADER}[Match]\nMACAddress={}\nType=ether\n\n[Network]\n",
        iface.mac
    );
    for net in &iface.addresses {
        let _ = writeln!(out, "Address={net}");
    }
    if let Some(gw) = iface.gateway4 {
        let _ = writeln!(out, "Gateway={gw}");
    }
    if let Some(gw) = iface.gateway6 {
        let _ = writeln!(out, "Gateway={gw}");
    }
    for server in dns {
        let _ = writeln!(out, "DNS={server}");
    }
    out
}

/// A stable instance id that changes whenever the identity does, so cloud-init treats
/// a changed identity as a new instance and applies it.
pub fn instance_id(identity: &Identity) -> String {
    format!(
        "iid-reprov-{:08x}",
        crc32fast::hash(identity.to_toml().as_bytes())
    )
}

/// NoCloud `meta-data`. The hostname is quoted: YAML would read `123` or `yes` as a
/// number or a boolean (it has only `[a-z0-9.-]`, so quoting needs no escapes).
pub fn meta_data(identity: &Identity) -> String {
    format!(
        "instance-id: {}\nlocal-hostname: \"{}\"\n",
        instance_id(identity),
        identity.hostname
    )
}

/// NoCloud `network-config`, version 2. Strings are quoted: YAML 1.1 would read an
/// all-digit MAC as a base-60 number. Default routes are written as `0.0.0.0/0` and
/// `::/0`, which every cloud-init release understands.
pub fn network_config(identity: &Identity) -> String {
    let mut out = format!("{HEADER}version: 2\n");
    if identity.interfaces.is_empty() {
        out.push_str("ethernets: {}\n");
        return out;
    }
    out.push_str("ethernets:\n");
    for (i, iface) in identity.interfaces.iter().enumerate() {
        let id = iface.name.clone().unwrap_or_else(|| format!("nic{i}"));
        let _ = writeln!(out, "  \"{id}\":");
        let _ = writeln!(out, "    match:\n      macaddress: \"{}\"", iface.mac);
        if !iface.addresses.is_empty() {
            out.push_str("    addresses:\n");
            for net in &iface.addresses {
                let _ = writeln!(out, "      - \"{net}\"");
            }
        }
        let routes: Vec<(&str, String)> = [
            iface.gateway4.map(|gw| ("0.0.0.0/0", gw.to_string())),
            iface.gateway6.map(|gw| ("::/0", gw.to_string())),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !routes.is_empty() {
            out.push_str("    routes:\n");
            for (to, via) in routes {
                let _ = writeln!(out, "      - to: \"{to}\"\n        via: \"{via}\"");
            }
        }
        if !dns_for(identity, iface).is_empty() {
            out.push_str("    nameservers:\n      addresses:\n");
            for server in &identity.dns {
                let _ = writeln!(out, "        - \"{server}\"");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::parse;

    const ONE_V4: &str = r#"
hostname = "web-01"
dns = ["192.0.2.53"]

[[interface]]
mac = "52:54:00:12:34:56"
name = "eth0"
addresses = ["192.0.2.10/24"]
gateway4 = "192.0.2.1"
"#;

    const DUAL_STACK: &str = r#"
hostname = "db.example.com"
dns = ["2001:db8::53", "192.0.2.53"]

[[interface]]
mac = "52:54:00:AA:BB:01"
addresses = ["192.0.2.20/24", "2001:db8::20/64"]
gateway4 = "192.0.2.1"
gateway6 = "fe80::1"
"#;

    const TWO_IFACES_NO_DNS: &str = r#"
hostname = "edge"

[[interface]]
mac = "52:54:00:00:00:01"
name = "ens3"
addresses = ["10.0.0.5/8"]

[[interface]]
mac = "52:54:00:00:00:02"
name = "ens4"
addresses = ["198.51.100.7/25"]
gateway4 = "198.51.100.1"
"#;

    fn files(text: &str) -> Vec<(String, String)> {
        render(&parse(text).unwrap())
    }

    fn file<'a>(files: &'a [(String, String)], path: &str) -> &'a str {
        &files
            .iter()
            .find(|(p, _)| p == path)
            .unwrap_or_else(|| panic!("{path} not rendered"))
            .1
    }

    #[test]
    fn renders_the_expected_file_set() {
        let paths: Vec<String> = files(TWO_IFACES_NO_DNS).into_iter().map(|f| f.0).collect();
        assert_eq!(
            paths,
            [
                "/etc/hostname",
                "/etc/hosts",
                "/etc/systemd/network/00-reprov-525400000001.network",
                "/etc/systemd/network/00-reprov-525400000002.network",
                "/var/lib/cloud/seed/nocloud/meta-data",
                "/var/lib/cloud/seed/nocloud/user-data",
                "/var/lib/cloud/seed/nocloud/network-config",
            ]
        );
    }

    #[test]
    fn hostname_and_hosts() {
        let cases = [
            (ONE_V4, "web-01\n", "127.0.1.1\tweb-01\n"),
            (
                DUAL_STACK,
                "db.example.com\n",
                "127.0.1.1\tdb.example.com db\n",
            ),
        ];
        for (text, hostname, hosts_line) in cases {
            let files = files(text);
            assert_eq!(file(&files, "/etc/hostname"), hostname);
            let hosts = file(&files, "/etc/hosts");
            assert!(hosts.contains("127.0.0.1\tlocalhost\n"), "{hosts}");
            assert!(hosts.contains(hosts_line), "{hosts}");
            assert!(
                hosts.contains("::1\tlocalhost ip6-localhost ip6-loopback\n"),
                "{hosts}"
            );
        }
    }

    #[test]
    fn hosts_keeps_the_images_lines_and_names_the_saved_host() {
        let identity = parse(DUAL_STACK).unwrap();
        let image = "127.0.0.1\tlocalhost\n127.0.1.1\tappliance-web\n\n\
                     ::1\tlocalhost ip6-localhost ip6-loopback\n\
                     # The application's own hosts.\n10.0.2.50\tdb.appliance.internal db\n";
        let edited = edit_hosts(Some(image), Some("appliance-web\n"), &identity);
        assert_eq!(
            edited,
            "127.0.0.1\tlocalhost\n127.0.1.1\tdb.example.com db\n\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n\
             # The application's own hosts.\n10.0.2.50\tdb.appliance.internal db\n"
        );
        // Twice gives the same file (a resumed job restores again).
        assert_eq!(
            edit_hosts(Some(&edited), Some("db.example.com"), &identity),
            edited
        );

        let cases = [
            // No 127.0.1.1 line: one is added after 127.0.0.1.
            (
                "# hosts\n127.0.0.1 localhost\n10.1.1.1 app\n",
                None,
                "# hosts\n127.0.0.1 localhost\n127.0.1.1\tdb.example.com db\n10.1.1.1 app\n",
            ),
            // The image's name on 127.0.0.1 (as Fedora does) gives way to the saved one.
            (
                "127.0.0.1 localhost old.example.org old # mine\n::1 localhost old\n",
                Some("old.example.org"),
                "127.0.0.1\tlocalhost db.example.com db # mine\n127.0.1.1\tdb.example.com db\n::1\tlocalhost db.example.com db\n",
            ),
            // Two 127.0.1.1 lines become one; an empty file gets the line.
            (
                "127.0.1.1 a\n127.0.1.1 b\n",
                None,
                "127.0.1.1\tdb.example.com db\n",
            ),
            ("", None, "127.0.1.1\tdb.example.com db\n"),
        ];
        for (image, old, expected) in cases {
            assert_eq!(
                edit_hosts(Some(image), old, &identity),
                expected,
                "{image:?}"
            );
        }
        assert_eq!(edit_hosts(None, None, &identity), hosts_file(&identity));
    }

    #[test]
    fn networkd_files() {
        let cases = [
            (
                ONE_V4,
                "/etc/systemd/network/00-reprov-525400123456.network",
                "[Match]\nMACAddress=52:54:00:12:34:56\nType=ether\n\n[Network]\n\
                 Address=192.0.2.10/24\nGateway=192.0.2.1\nDNS=192.0.2.53\n",
            ),
            (
                DUAL_STACK,
                "/etc/systemd/network/00-reprov-525400aabb01.network",
                "[Match]\nMACAddress=52:54:00:aa:bb:01\nType=ether\n\n[Network]\n\
                 Address=192.0.2.20/24\nAddress=2001:db8::20/64\nGateway=192.0.2.1\n\
                 Gateway=fe80::1\nDNS=2001:db8::53\nDNS=192.0.2.53\n",
            ),
            (
                TWO_IFACES_NO_DNS,
                "/etc/systemd/network/00-reprov-525400000001.network",
                "[Match]\nMACAddress=52:54:00:00:00:01\nType=ether\n\n[Network]\n\
                 Address=10.0.0.5/8\n",
            ),
            (
                TWO_IFACES_NO_DNS,
                "/etc/systemd/network/00-reprov-525400000002.network",
                "[Match]\nMACAddress=52:54:00:00:00:02\nType=ether\n\n[Network]\n\
                 Address=198.51.100.7/25\nGateway=198.51.100.1\n",
            ),
        ];
        for (text, path, body) in cases {
            assert_eq!(
                file(&files(text), path),
                format!("{HEADER}{body}"),
                "{path}"
            );
        }
    }

    #[test]
    fn dns_goes_where_the_gateway_is() {
        let text = r#"
hostname = "two"
dns = ["192.0.2.53"]
[[interface]]
mac = "52:54:00:00:00:01"
addresses = ["10.0.0.5/8"]
[[interface]]
mac = "52:54:00:00:00:02"
addresses = ["192.0.2.7/24"]
gateway4 = "192.0.2.1"
"#;
        let files = files(text);
        let first = file(
            &files,
            "/etc/systemd/network/00-reprov-525400000001.network",
        );
        let second = file(
            &files,
            "/etc/systemd/network/00-reprov-525400000002.network",
        );
        assert!(!first.contains("DNS="), "{first}");
        assert!(second.contains("DNS=192.0.2.53\n"), "{second}");
    }

    #[test]
    fn nocloud_meta_data() {
        let identity = parse(ONE_V4).unwrap();
        let meta = meta_data(&identity);
        let id = instance_id(&identity);
        assert_eq!(
            meta,
            format!("instance-id: {id}\nlocal-hostname: \"web-01\"\n")
        );
        assert!(id.starts_with("iid-reprov-") && id.len() == "iid-reprov-".len() + 8);
        // Stable for one identity, different for another.
        assert_eq!(id, instance_id(&parse(ONE_V4).unwrap()));
        assert_ne!(id, instance_id(&parse(DUAL_STACK).unwrap()));
    }

    #[test]
    fn nocloud_network_config() {
        let cases = [
            (
                ONE_V4,
                r#"version: 2
ethernets:
  "eth0":
    match:
      macaddress: "52:54:00:12:34:56"
    addresses:
      - "192.0.2.10/24"
    routes:
      - to: "0.0.0.0/0"
        via: "192.0.2.1"
    nameservers:
      addresses:
        - "192.0.2.53"
"#,
            ),
            (
                DUAL_STACK,
                r#"version: 2
ethernets:
  "nic0":
    match:
      macaddress: "52:54:00:aa:bb:01"
    addresses:
      - "192.0.2.20/24"
      - "2001:db8::20/64"
    routes:
      - to: "0.0.0.0/0"
        via: "192.0.2.1"
      - to: "::/0"
        via: "fe80::1"
    nameservers:
      addresses:
        - "2001:db8::53"
        - "192.0.2.53"
"#,
            ),
            (
                TWO_IFACES_NO_DNS,
                r#"version: 2
ethernets:
  "ens3":
    match:
      macaddress: "52:54:00:00:00:01"
    addresses:
      - "10.0.0.5/8"
  "ens4":
    match:
      macaddress: "52:54:00:00:00:02"
    addresses:
      - "198.51.100.7/25"
    routes:
      - to: "0.0.0.0/0"
        via: "198.51.100.1"
"#,
            ),
            ("hostname = \"bare\"\n", "version: 2\nethernets: {}\n"),
        ];
        for (text, expected) in cases {
            assert_eq!(
                network_config(&parse(text).unwrap()),
                format!("{HEADER}{expected}")
            );
        }
    }
}
