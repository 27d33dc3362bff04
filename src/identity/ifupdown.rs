//! The identity for a new OS that brings its network up with ifupdown
//! (`/etc/network/interfaces`, what a Debian server installed by debian-installer or
//! debootstrap uses), where a systemd-networkd file would never be read.
//!
//! The image's own stanzas for its network interfaces are its network default (DHCP on
//! the NIC, often), as the image's DHCP `.network` file is for networkd: they are
//! commented out, and the saved interfaces added by the names they had on the old OS
//! (the same NICs of the same server; see [`stanzas`]). Loopback, `source` lines and
//! comments stay.
//! Everything reprov adds sits between two marker lines and is replaced, not added
//! again, by a later restore. The saved DNS servers also go to systemd-resolved, which
//! ifupdown does not feed. Pure.

use super::{Identity, Interface};
use std::fmt::Write as _;
use std::net::IpAddr;

pub const INTERFACES_PATH: &str = "/etc/network/interfaces";
/// Where systemd-resolved, when the new OS runs it, reads the saved DNS servers: ifupdown
/// hands `dns-nameservers` to resolvconf only, and feeds resolved nothing.
pub const RESOLVED_PATH: &str = "/etc/systemd/resolved.conf.d/reprov.conf";

const BEGIN: &str = "# BEGIN reprov: the saved identity (reprov/identity)";
const END: &str = "# END reprov";
/// Put before each line of the image's own stanzas that the identity replaces.
const DISABLED: &str = "# reprov: ";

/// Words that start a stanza (interfaces(5)); other lines are options of the last one.
fn starts_stanza(word: &str) -> bool {
    matches!(
        word,
        "iface" | "mapping" | "auto" | "rename" | "source" | "source-directory"
    ) || word.starts_with("allow-")
}

/// `existing`, the new OS's `/etc/network/interfaces`, with the saved identity in place
/// of the image's own interfaces (see the module docs). `dns` goes on the interfaces
/// [`super::render`] gives it to (`dns-nameservers`, read when resolvconf is there).
pub fn edit_interfaces(existing: &str, identity: &Identity) -> String {
    let mut out = String::new();
    let mut ours = false;
    // Whether the option lines being read belong to a stanza that is commented out.
    let mut disabling = false;
    for line in existing.lines().map(|l| l.trim_end_matches('\r')) {
        // What an earlier restore wrote goes: it is written anew below.
        if line == BEGIN {
            ours = true;
        }
        if ours {
            ours = line != END;
            continue;
        }
        let mut words = line.split_whitespace();
        let Some(first) = words.next().filter(|w| !w.starts_with('#')) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        if starts_stanza(first) {
            let names: Vec<&str> = words.collect();
            disabling =
                matches!(first, "iface" | "mapping" | "rename") && names.first() != Some(&"lo");
            if first == "auto" || first.starts_with("allow-") {
                let kept: Vec<&str> = names.iter().copied().filter(|n| *n == "lo").collect();
                if kept.len() < names.len() {
                    let _ = writeln!(out, "{DISABLED}{line}");
                    if !kept.is_empty() {
                        let _ = writeln!(out, "{first} {}", kept.join(" "));
                    }
                    continue;
                }
            }
        }
        if disabling {
            let _ = writeln!(out, "{DISABLED}{line}");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !out.is_empty() && !out.ends_with("\n\n") {
        out.push('\n');
    }
    let _ = writeln!(out, "{BEGIN}");
    for iface in &identity.interfaces {
        out.push_str(&stanzas(iface, super::render::dns_for(identity, iface)));
    }
    let _ = writeln!(out, "{END}");
    out
}

/// The saved DNS servers as a systemd-resolved drop-in; `None` without any.
pub fn resolved_dropin(identity: &Identity) -> Option<String> {
    let servers: Vec<String> = identity.dns.iter().map(IpAddr::to_string).collect();
    (!servers.is_empty()).then(|| {
        format!(
            "# Written by reprov from the saved identity (reprov/identity).\n[Resolve]\nDNS={}\n",
            servers.join(" ")
        )
    })
}

/// The stanzas of one saved interface, with its static addresses per family (none: only
/// the link comes up). By the name the NIC had on the old OS, as debian-installer writes
/// them (`allow-hotplug`: brought up whenever the kernel has the NIC, early or late):
/// ifupdown brings an interface up by name when the NIC appears, and a MAC pattern is
/// not looked up then. Only an identity without the name (written by hand) is matched by
/// MAC (`auto`: among the NICs the kernel has when the network starts).
fn stanzas(iface: &Interface, dns: &[IpAddr]) -> String {
    let (mut out, name) = match &iface.name {
        Some(name) => (format!("allow-hotplug {name}\n"), name.clone()),
        None => {
            let logical = format!("reprov-{}", iface.mac.hex());
            (format!("auto mac/{}={logical}\n", iface.mac), logical)
        }
    };
    let v4: Vec<_> = iface
        .addresses
        .iter()
        .filter(|a| a.addr.is_ipv4())
        .collect();
    let v6: Vec<_> = iface
        .addresses
        .iter()
        .filter(|a| a.addr.is_ipv6())
        .collect();
    if v4.is_empty() && v6.is_empty() {
        let _ = writeln!(out, "iface {name} inet manual");
    }
    let servers: Vec<String> = dns.iter().map(IpAddr::to_string).collect();
    let families = [
        ("inet", v4, iface.gateway4.map(IpAddr::from)),
        ("inet6", v6, iface.gateway6.map(IpAddr::from)),
    ];
    let mut dns_written = false;
    for (family, addresses, gateway) in families {
        if addresses.is_empty() {
            continue;
        }
        let _ = writeln!(out, "iface {name} {family} static");
        for address in addresses {
            let _ = writeln!(out, "    address {address}");
        }
        if let Some(gateway) = gateway {
            let _ = writeln!(out, "    gateway {gateway}");
        }
        if !servers.is_empty() && !dns_written {
            let _ = writeln!(out, "    dns-nameservers {}", servers.join(" "));
            dns_written = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        super::super::parse(
            "hostname = \"web-07\"\ndns = [\"10.0.2.3\"]\n\n[[interface]]\n\
             mac = \"52:54:00:12:34:56\"\nname = \"ens3\"\n\
             addresses = [\"10.0.2.77/24\", \"fd00::77/64\"]\ngateway4 = \"10.0.2.2\"\n\n\
             [[interface]]\nmac = \"52:54:00:ab:cd:ef\"\n",
        )
        .unwrap()
    }

    /// What debian-installer writes for a server with one NIC on DHCP.
    const INSTALLER: &str = "\
# This file describes the network interfaces available on your system
# and how to activate them. For more information, see interfaces(5).

source /etc/network/interfaces.d/*

# The loopback network interface
auto lo
iface lo inet loopback

# The primary network interface
allow-hotplug ens3
iface ens3 inet dhcp
";

    const SAVED: &str = "\
# BEGIN reprov: the saved identity (reprov/identity)
allow-hotplug ens3
iface ens3 inet static
    address 10.0.2.77/24
    gateway 10.0.2.2
    dns-nameservers 10.0.2.3
iface ens3 inet6 static
    address fd00::77/64
auto mac/52:54:00:ab:cd:ef=reprov-525400abcdef
iface reprov-525400abcdef inet manual
# END reprov
";

    #[test]
    fn the_images_interfaces_give_way_to_the_saved_ones() {
        let edited = edit_interfaces(INSTALLER, &identity());
        let own = "allow-hotplug ens3\niface ens3 inet dhcp\n";
        let disabled = "# reprov: allow-hotplug ens3\n# reprov: iface ens3 inet dhcp\n";
        let want = format!("{}\n{SAVED}", INSTALLER.replace(own, disabled));
        assert_eq!(edited, want);
        // A second restore (a resumed job) gives the same file, not a second copy.
        assert_eq!(edit_interfaces(&edited, &identity()), want);
    }

    #[test]
    fn options_go_with_their_stanza_and_loopback_stays_up() {
        let image = "\
auto lo eth0 br0
iface lo inet loopback
iface eth0 inet static
\taddress 192.0.2.9/24
    gateway 192.0.2.1
mapping eth1
    script /usr/local/bin/map
    map home eth1-home
iface lo inet6 loopback
";
        let edited = edit_interfaces(image, &identity());
        let kept: Vec<&str> = edited
            .lines()
            .take_while(|l| *l != "# BEGIN reprov: the saved identity (reprov/identity)")
            .collect();
        assert_eq!(
            kept,
            [
                "# reprov: auto lo eth0 br0",
                "auto lo",
                "iface lo inet loopback",
                "# reprov: iface eth0 inet static",
                "# reprov: \taddress 192.0.2.9/24",
                "# reprov:     gateway 192.0.2.1",
                "# reprov: mapping eth1",
                "# reprov:     script /usr/local/bin/map",
                "# reprov:     map home eth1-home",
                "iface lo inet6 loopback",
                "",
            ]
        );
    }
}
