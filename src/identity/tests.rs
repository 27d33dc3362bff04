use super::*;

const GOOD: &str = r#"
hostname = "web-01.example.com"
dns = ["192.0.2.53", "2001:db8::53"]

[system]
model = "PowerEdge R640"
serial = "CZ1234"

[[interface]]
mac = "52:54:00:12:34:56"
name = "eth0"
addresses = ["192.0.2.10/24", "2001:db8::10/64"]
gateway4 = "192.0.2.1"
gateway6 = "fe80::1"

[[interface]]
mac = "52:54:00:AB:CD:EF"
addresses = ["10.1.2.3/8"]
"#;

#[test]
fn parses_a_good_identity() {
    let identity = parse(GOOD).unwrap();
    assert_eq!(identity.hostname.as_str(), "web-01.example.com");
    assert_eq!(identity.hostname.short(), "web-01");
    assert_eq!(identity.system.model.as_deref(), Some("PowerEdge R640"));
    assert_eq!(identity.system.serial.as_deref(), Some("CZ1234"));
    assert_eq!(identity.dns.len(), 2);
    assert_eq!(identity.interfaces.len(), 2);
    let eth0 = &identity.interfaces[0];
    assert_eq!(eth0.mac.to_string(), "52:54:00:12:34:56");
    assert_eq!(eth0.addresses[1].to_string(), "2001:db8::10/64");
    assert_eq!(eth0.gateway6.unwrap().to_string(), "fe80::1");
    // MACs are kept in lower case whatever the file had.
    assert_eq!(identity.interfaces[1].mac.to_string(), "52:54:00:ab:cd:ef");
    assert_eq!(identity.interfaces[1].mac.hex(), "525400abcdef");
}

#[test]
fn round_trips_through_toml() {
    let identity = parse(GOOD).unwrap();
    assert_eq!(parse(&identity.to_toml()).unwrap(), identity);
    let minimal = parse("hostname = \"a\"\n").unwrap();
    assert_eq!(minimal.to_toml(), "hostname = \"a\"\n");
}

#[test]
fn accepts_hostname_edges() {
    let label63 = "a".repeat(63);
    // 4 labels of 63 plus 3 dots = 255 > 253; trim the last label to reach exactly 253.
    let long = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
    assert_eq!(long.len(), 253);
    for name in [
        "a",
        "0",
        "web-01",
        "a-b.c-d",
        label63.as_str(),
        long.as_str(),
    ] {
        assert!(name.parse::<Hostname>().is_ok(), "{name}");
    }
}

/// Each bad file is refused, and the message names the field and says what is wrong.
#[test]
fn refuses_bad_identity_files() {
    let iface = |body: &str| format!("hostname = \"h\"\n[[interface]]\n{body}\n");
    let oversized = format!("hostname = \"h\"\n#{}\n", "x".repeat(MAX_FILE_LEN));
    let too_many_dns = format!(
        "hostname = \"h\"\ndns = [{}]\n",
        (1..=9)
            .map(|i| format!("\"192.0.2.{i}\""))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let too_many_ifaces: String = std::iter::once("hostname = \"h\"\n".to_string())
        .chain((1..=17).map(|i| format!("[[interface]]\nmac = \"52:54:00:00:00:{i:02x}\"\n")))
        .collect();
    let too_many_addrs = iface(&format!(
        "mac = \"52:54:00:00:00:01\"\naddresses = [{}]",
        (1..=17)
            .map(|i| format!("\"10.0.0.{i}/8\""))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "hostname with a newline",
            "hostname = \"web\\n01\"\n".into(),
            &["line 1", "hostname", "'\\n'"],
        ),
        (
            "hostname with ;",
            "hostname = \"web;reboot\"\n".into(),
            &["hostname", "';'"],
        ),
        (
            "hostname with $",
            "hostname = \"$(reboot)\"\n".into(),
            &["hostname", "'$'"],
        ),
        (
            "hostname with a space",
            "hostname = \"web 01\"\n".into(),
            &["hostname", "' '"],
        ),
        (
            "hostname label too long",
            format!("hostname = \"{}.example\"\n", "a".repeat(64)),
            &["hostname", "more than 63"],
        ),
        (
            "hostname too long",
            format!("hostname = \"{}\"\n", vec!["a".repeat(63); 4].join(".")),
            &["hostname", "more than 253"],
        ),
        (
            "hostname label ends with -",
            "hostname = \"web-.example\"\n".into(),
            &["hostname", "starts or ends with '-'"],
        ),
        (
            "hostname empty label",
            "hostname = \"web..example\"\n".into(),
            &["hostname", "empty label"],
        ),
        (
            "hostname that is an address",
            "hostname = \"192.0.2.1\"\n".into(),
            &["hostname", "is an IPv4 address"],
        ),
        (
            "hostname upper case",
            "hostname = \"Web\"\n".into(),
            &["hostname", "'W'"],
        ),
        (
            "missing hostname",
            "dns = []\n".into(),
            &["missing field `hostname`"],
        ),
        (
            "bad MAC",
            iface("mac = \"52:54:00:12:34\""),
            &["line 3", "mac", "not a MAC address"],
        ),
        (
            "MAC with bad digit",
            iface("mac = \"52:54:00:12:34:zz\""),
            &["mac", "not a MAC address"],
        ),
        (
            "duplicate MAC",
            "hostname = \"h\"\n[[interface]]\nmac = \"52:54:00:00:00:01\"\n\
             [[interface]]\nmac = \"52:54:00:00:00:01\"\n"
                .into(),
            &["interface[1].mac", "also interface[0]'s MAC"],
        ),
        (
            "bad address",
            iface("mac = \"52:54:00:00:00:01\"\naddresses = [\"192.0.2.300/24\"]"),
            &[
                "addresses",
                "\"192.0.2.300\"",
                "not an IPv4 or IPv6 address",
            ],
        ),
        (
            "address without prefix",
            iface("mac = \"52:54:00:00:00:01\"\naddresses = [\"192.0.2.3\"]"),
            &["addresses", "no prefix length"],
        ),
        (
            "prefix 33 on IPv4",
            iface("mac = \"52:54:00:00:00:01\"\naddresses = [\"192.0.2.3/33\"]"),
            &["addresses", "prefix length \"33\"", "not 1 to 32"],
        ),
        (
            "prefix 129 on IPv6",
            iface("mac = \"52:54:00:00:00:01\"\naddresses = [\"2001:db8::1/129\"]"),
            &["addresses", "not 1 to 128"],
        ),
        (
            "gateway of the wrong family",
            iface("mac = \"52:54:00:00:00:01\"\ngateway4 = \"2001:db8::1\""),
            &["gateway4", "\"2001:db8::1\" is not an IPv4 address"],
        ),
        (
            "multicast gateway",
            iface("mac = \"52:54:00:00:00:01\"\ngateway4 = \"224.0.0.1\""),
            &["interface[0].gateway4", "multicast"],
        ),
        (
            "bad DNS",
            "hostname = \"h\"\ndns = [\"dns.example\"]\n".into(),
            &["dns", "\"dns.example\" is not an IPv4 or IPv6 address"],
        ),
        (
            "too many DNS",
            too_many_dns,
            &["dns", "9 servers, at most 8"],
        ),
        (
            "too many interfaces",
            too_many_ifaces,
            &["interface", "17 interfaces, at most 16"],
        ),
        (
            "too many addresses",
            too_many_addrs,
            &["interface[0].addresses", "17 addresses, at most 16"],
        ),
        (
            "bad interface name",
            iface("mac = \"52:54:00:00:00:01\"\nname = \"eth0;x\""),
            &["interface[0].name", "';'"],
        ),
        (
            "control character in serial",
            "hostname = \"h\"\n[system]\nserial = \"A\\u0007B\"\n".into(),
            &["system.serial", "control character"],
        ),
        (
            "unknown top-level key",
            "hostname = \"h\"\nhostnme = \"typo\"\n".into(),
            &["line 2", "unknown field `hostnme`"],
        ),
        (
            "unknown interface key",
            iface("mac = \"52:54:00:00:00:01\"\ngateway = \"192.0.2.1\""),
            &["unknown field `gateway`"],
        ),
        ("not TOML", "hostname: web\n".into(), &["line 1"]),
        (
            "oversized file",
            oversized,
            &["too large", "at most 16384 allowed"],
        ),
    ];
    assert!(cases.len() >= 10);
    for (what, text, expected) in cases {
        let error = match parse_bytes(text.as_bytes()) {
            Ok(identity) => panic!("{what}: accepted as {identity:?}"),
            Err(e) => e.to_string(),
        };
        for part in expected {
            assert!(error.contains(part), "{what}: {error:?} lacks {part:?}");
        }
    }
}

#[test]
fn refuses_bytes_that_are_not_text() {
    let error = parse_bytes(b"hostname = \"\xff\"\n").unwrap_err();
    assert!(matches!(error, Error::NotText(_)), "{error}");
}

#[test]
fn default_image_names() {
    let cases = [
        ("PowerEdge R640", "CZ1234", "PowerEdge_R640_CZ1234"),
        (
            "Standard PC (i440FX + PIIX, 1996)",
            "",
            "Standard_PC_i440FX_PIIX_1996",
        ),
        ("", "SN-42", "SN-42"),
        ("", "", "appliance"),
        ("../../etc", "passwd", "etc_passwd"),
        ("a/b\\c", "x;rm -rf", "a_b_c_x_rm_-rf"),
        (".hidden", "v1.2", "hidden_v1.2"),
        ("Modèle", "Ü1", "Mod_le_1"),
    ];
    for (model, serial, expected) in cases {
        assert_eq!(
            default_image_name(model, serial),
            expected,
            "{model:?} {serial:?}"
        );
    }
    let long = default_image_name(&"M".repeat(300), &"S".repeat(300));
    assert_eq!(long.len(), MAX_IMAGE_NAME);
    for name in [long, default_image_name("\u{0}\n\t", "!@#")] {
        assert!(name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
        assert!(!name.is_empty() && !name.starts_with('.'));
    }
}

#[test]
fn saves_and_loads_through_the_store() {
    use std::io::Cursor;
    let mut volume = Cursor::new(vec![0u8; 8 * 1024 * 1024]);
    fatfs::format_volume(&mut volume, fatfs::FormatVolumeOptions::new()).unwrap();
    let store = crate::store::Store::open(&mut volume).unwrap();
    assert!(load(&store).unwrap().is_none());
    let identity = parse(GOOD).unwrap();
    save(&store, &identity).unwrap();
    assert_eq!(load(&store).unwrap(), Some(identity));
    store.unmount().unwrap();
}
