//! URLs of remote files: `ftp://`, `ftps://` (explicit TLS), `http://` and `https://`, and
//! never with credentials in them, so a [`RemoteUrl`] can be shown, logged and written to
//! a sidecar as it is.

use super::Error;
use std::fmt;

/// The protocols reprov speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Ftp,
    Http,
}

impl Scheme {
    fn default_port(self, tls: bool) -> u16 {
        match (self, tls) {
            (Scheme::Ftp, _) => 21,
            (Scheme::Http, false) => 80,
            (Scheme::Http, true) => 443,
        }
    }

    /// The protocol's name as people say it ("FTP").
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Ftp => "FTP",
            Scheme::Http => "HTTP",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Scheme::Ftp => "ftp",
            Scheme::Http => "http",
        }
    }
}

/// A remote file or directory: scheme, host, port and an absolute path. Holds no
/// credentials (parsing refuses them), so its `Display` is safe to show anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteUrl {
    /// The protocol; `tls` says whether it runs over TLS (`https://`, `ftps://`).
    pub scheme: Scheme,
    pub tls: bool,
    /// Host name or address; an IPv6 address without brackets.
    pub host: String,
    pub port: u16,
    /// Starts with `/`; only characters that need no escaping in FTP or HTTP.
    pub path: String,
}

impl RemoteUrl {
    /// Parses `ftp://host[:port]/path` or `http://…`. Refuses other schemes, user info
    /// (`user:password@`), queries, fragments and characters that would need escaping.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let refuse = |reason: &str| Error::Url {
            url: Redacted(text).to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| refuse("expected ftp://HOST/PATH or http://HOST/PATH"))?;
        let (scheme, tls) = match scheme.to_ascii_lowercase().as_str() {
            "ftp" => (Scheme::Ftp, false),
            "ftps" => (Scheme::Ftp, true),
            "http" => (Scheme::Http, false),
            "https" => (Scheme::Http, true),
            _ => {
                return Err(refuse(
                    "only ftp://, ftps://, http:// and https:// are supported",
                ))
            }
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/"),
        };
        if authority.contains('@') {
            return Err(refuse(
                "it carries credentials (user:password@); name the user in store.toml \
                 and keep the password in its password file",
            ));
        }
        let (host, port) = split_host_port(authority).ok_or_else(|| refuse("bad host or port"))?;
        let port = port.unwrap_or(scheme.default_port(tls));
        check_path(path).map_err(|reason| refuse(&reason))?;
        Ok(RemoteUrl {
            scheme,
            tls,
            host,
            port,
            path: path.to_string(),
        })
    }

    /// The URL of `name` inside this one taken as a directory (`name` may hold `/`).
    pub fn join(&self, name: &str) -> Result<Self, Error> {
        let name = name.trim_start_matches('/');
        let path = format!("{}/{}", self.path.trim_end_matches('/'), name);
        check_path(&path).map_err(|reason| Error::Url {
            url: format!("{self} + {name}"),
            reason,
        })?;
        Ok(RemoteUrl {
            path,
            ..self.clone()
        })
    }

    /// `host:port` to connect to (IPv6 in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The last path segment: the file's name.
    pub fn file_name(&self) -> Option<&str> {
        self.path.rsplit('/').next().filter(|name| !name.is_empty())
    }

    /// Same server (scheme, host and port) as `other`.
    pub fn same_server(&self, other: &RemoteUrl) -> bool {
        self.scheme == other.scheme
            && self.tls == other.tls
            && self.host == other.host
            && self.port == other.port
    }
}

impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}://",
            self.scheme.prefix(),
            if self.tls { "s" } else { "" }
        )?;
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        if self.port != self.scheme.default_port(self.tls) {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.path)
    }
}

fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let host_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':');
    if host.is_empty() || !host.chars().all(host_ok) {
        return None;
    }
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok().filter(|&p| p != 0)?),
        None => None,
    };
    Some((host.to_string(), port))
}

/// Paths are passed to FTP as they are and to HTTP unescaped, so only plain characters.
fn check_path(path: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/-._~+,=".contains(c);
    match path.chars().find(|&c| !plain(c)) {
        Some(c) => Err(format!(
            "the path has {c:?}; use letters, digits and - . _ ~ + , = only"
        )),
        None if path.split('/').any(|seg| seg == "..") => {
            Err("the path has a \"..\" segment".to_string())
        }
        None => Ok(()),
    }
}

/// Shows a URL given by someone with any user info replaced by `***`, for messages
/// about input that was refused.
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let start = text.find("://").map_or(0, |i| i + 3);
        let end = text[start..].find('/').map_or(text.len(), |i| start + i);
        match text[start..end].rfind('@') {
            Some(at) => write!(f, "{}***@{}", &text[..start], &text[start + at + 1..]),
            None => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_shows_urls() {
        let cases = [
            (
                "ftp://127.0.0.1:2121/images/B.img",
                "127.0.0.1",
                2121,
                "/images/B.img",
            ),
            ("ftp://10.0.2.2/B.img", "10.0.2.2", 21, "/B.img"),
            ("HTTP://store.example:8080", "store.example", 8080, "/"),
            ("http://[::1]:8000/a/b", "::1", 8000, "/a/b"),
            (
                "https://store.example/B.img",
                "store.example",
                443,
                "/B.img",
            ),
            ("ftps://10.0.2.2/B.img", "10.0.2.2", 21, "/B.img"),
            ("https://10.0.2.2:80/B.img", "10.0.2.2", 80, "/B.img"),
        ];
        for (text, host, port, path) in cases {
            let url = RemoteUrl::parse(text).unwrap();
            assert_eq!(
                (url.host.as_str(), url.port, url.path.as_str()),
                (host, port, path)
            );
            assert_eq!(RemoteUrl::parse(&url.to_string()).unwrap(), url, "{text}");
        }
        let (plain, tls) = (
            RemoteUrl::parse("http://h/B.img").unwrap(),
            RemoteUrl::parse("https://h/B.img").unwrap(),
        );
        assert!(tls.tls && !plain.tls && !tls.same_server(&plain));
        assert_eq!(
            RemoteUrl::parse("https://h:443/B.img").unwrap().to_string(),
            "https://h/B.img"
        );
        assert_eq!(
            RemoteUrl::parse("ftp://10.0.2.2:21/B.img")
                .unwrap()
                .to_string(),
            "ftp://10.0.2.2/B.img"
        );
    }

    #[test]
    fn refuses_bad_urls_without_showing_credentials() {
        let cases = [
            ("ftp://reprov:canary-pw@10.0.2.2/B.img", "credentials"),
            ("ftp://canary-pw@10.0.2.2/B.img", "credentials"),
            ("https://reprov:canary-pw@host/B.img", "credentials"),
            ("sftp://host/B.img", "only ftp://, ftps://"),
            ("file:///B.img", "only ftp"),
            ("10.0.2.2/B.img", "expected"),
            ("ftp://host:99999/B.img", "port"),
            ("ftp:///B.img", "host"),
            ("http://host/a b", "path"),
            ("http://host/a?x=1", "path"),
            ("http://host/../etc", ".."),
        ];
        for (text, why) in cases {
            let message = RemoteUrl::parse(text).unwrap_err().to_string();
            assert!(message.contains(why), "{text}: {message}");
            assert!(!message.contains("canary-pw"), "{message}");
        }
    }

    #[test]
    fn joins_names_under_a_directory() {
        let base = RemoteUrl::parse("ftp://h:2121/images/").unwrap();
        assert_eq!(base.join("B.img").unwrap().path, "/images/B.img");
        let root = RemoteUrl::parse("http://h").unwrap();
        assert_eq!(
            root.join("/x/B.img").unwrap().to_string(),
            "http://h/x/B.img"
        );
        assert_eq!(root.join("x/B.img").unwrap().file_name(), Some("B.img"));
        assert!(root.join("a b").is_err());
    }

    #[test]
    fn redacts_user_info() {
        let cases = [
            ("ftp://u:pw@h/p@x", "ftp://***@h/p@x"),
            ("ftp://h/p@x", "ftp://h/p@x"),
            ("u:pw@h", "***@h"),
        ];
        for (text, shown) in cases {
            assert_eq!(Redacted(text).to_string(), shown);
        }
    }
}
