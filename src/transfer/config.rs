//! The server group's store: `/etc/reprov/store.toml` on the NOS.
//!
//! ```toml
//! url = "ftp://10.0.2.2:2121"        # ftp://, ftps://, http:// or https://, never user:password@
//! directory = "images"               # under the URL; image files go here
//! user = "reprov"                    # with password_file, or neither (anonymous)
//! password_file = "/etc/reprov/store.pass"   # mode 600: readable by its owner only
//! group = "web"                      # optional: the fleet group (`reprov agent`)
//! ca_file = "/etc/reprov/store-ca.pem"  # optional: the CA certificates a TLS store's
//!                                    # certificate must chain to (default: the system's)
//! ```
//!
//! The password is read only from its file, only when a transfer needs it, and is kept in a
//! [`Secret`] that never prints.

use super::url::RemoteUrl;
use super::Error;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the store config lives on a NOS.
pub const DEFAULT_PATH: &str = "/etc/reprov/store.toml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    url: String,
    #[serde(default)]
    directory: String,
    user: Option<String>,
    password_file: Option<PathBuf>,
    /// The fleet group this server belongs to (`reprov agent`).
    group: Option<String>,
    ca_file: Option<PathBuf>,
}

/// The server group's store, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// The store's directory: the config's URL joined with its `directory`.
    pub url: RemoteUrl,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// The fleet group this server belongs to (`reprov agent` reads its desired state).
    pub group: Option<String>,
    /// Whom a TLS store is checked against.
    pub tls: super::TlsTrust,
}

impl StoreConfig {
    /// Parses and checks a store config; `origin` names it in messages. Pure: the
    /// password file is not read here.
    pub fn parse(text: &str, origin: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::Config {
            path: origin.to_string(),
            reason,
        };
        // toml's message may quote the offending line, which could hold a pasted password.
        let raw: Raw = toml::from_str(text).map_err(|e| {
            bad(format!(
                "not a valid store config ({}); expected url, directory, user, password_file, group, ca_file",
                e.message()
            ))
        })?;
        let url = RemoteUrl::parse(&raw.url).map_err(|e| bad(e.to_string()))?;
        let url = url.join(&raw.directory).map_err(|e| bad(e.to_string()))?;
        match (&raw.user, &raw.password_file) {
            (Some(user), Some(_)) if user.is_empty() || user.contains(char::is_control) => {
                Err(bad("user must be a plain non-empty name".to_string()))
            }
            (Some(_), None) => Err(bad(
                "user is set but password_file is not; give both, or neither for anonymous access"
                    .to_string(),
            )),
            (None, Some(_)) => Err(bad(
                "password_file is set but user is not; give both, or neither".to_string(),
            )),
            _ => Ok(StoreConfig {
                url,
                user: raw.user,
                password_file: raw.password_file,
                group: raw.group,
                tls: super::TlsTrust {
                    ca_file: raw.ca_file,
                },
            }),
        }
    }

    /// Reads and parses the config file at `path`.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = crate::io::read_regular_to_string(path, 1 << 20).map_err(|source| {
            Error::ReadConfig {
                path: path.display().to_string(),
                source,
            }
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The file or directory `path` in the store's directory, with the store's login.
    pub fn at(&self, path: &str) -> Result<Source, Error> {
        Ok(Source {
            url: self.url.join(path)?,
            login: self.login()?,
            tls: self.tls.clone(),
        })
    }

    /// The user and password to log in with (reads the password file), or `None` for
    /// anonymous access.
    pub fn login(&self) -> Result<Option<Login>, Error> {
        match (&self.user, &self.password_file) {
            (Some(user), Some(file)) => Ok(Some(Login {
                user: user.clone(),
                password: read_password_file(file)?,
            })),
            _ => Ok(None),
        }
    }

    /// What `name_or_url` means: a URL (with the store's login when it is on the store's
    /// server, anonymous otherwise) or a file name in the store's directory.
    pub fn source(&self, name_or_url: &str) -> Result<Source, Error> {
        if name_or_url.contains("://") {
            let url = RemoteUrl::parse(name_or_url)?;
            // The store's login and CA certificates go only to the store's server.
            let (login, tls) = match url.same_server(&self.url) {
                true => (self.login()?, self.tls.clone()),
                false => (None, super::TlsTrust::default()),
            };
            Ok(Source { url, login, tls })
        } else {
            self.at(name_or_url)
        }
    }
}

/// A remote file and how to log in to its server.
#[derive(Debug, Clone)]
pub struct Source {
    pub url: RemoteUrl,
    pub login: Option<Login>,
    /// Whom its server is checked against, when it speaks TLS.
    pub tls: super::TlsTrust,
}

impl Source {
    /// A URL given by someone, logged in to anonymously.
    pub fn anonymous(url: &str) -> Result<Self, Error> {
        Ok(Source {
            url: RemoteUrl::parse(url)?,
            login: None,
            tls: super::TlsTrust::default(),
        })
    }
}

/// A user name and its password.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub password: Secret,
}

/// A password: its `Debug` and `Display` never show it; [`Secret::expose`] hands it to the
/// protocol, the only place it may go.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(password: String) -> Self {
        Secret(password)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Why a password file's mode is unsafe, if it is: any permission for group or others.
pub fn check_password_mode(mode: u32) -> Result<(), String> {
    match mode & 0o077 {
        0 => Ok(()),
        _ => Err(format!(
            "is open to group or others (mode {:04o}); make it readable by its owner only: chmod 600",
            mode & 0o7777
        )),
    }
}

/// Reads a password from its file: the first line, refused when the file is open to
/// group or others or the password is empty.
pub fn read_password_file(path: &Path) -> Result<Secret, Error> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |reason: String| Error::PasswordFile {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot be read: {e}")))?;
    check_password_mode(meta.permissions().mode()).map_err(bad)?;
    let text = crate::io::read_regular_to_string(path, 64 << 10)
        .map_err(|e| bad(format!("cannot be read: {e}")))?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        return Err(bad(
            "is empty; put the password on its first line".to_string()
        ));
    }
    Ok(Secret(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "url = \"ftp://10.0.2.2:2121\"\ndirectory = \"images\"\n\
                        user = \"reprov\"\npassword_file = \"/etc/reprov/store.pass\"\n";

    #[test]
    fn parses_a_store_config() {
        let config = StoreConfig::parse(GOOD, "store.toml").unwrap();
        assert_eq!(config.url.to_string(), "ftp://10.0.2.2:2121/images");
        assert_eq!(config.user.as_deref(), Some("reprov"));
        let anonymous = StoreConfig::parse("url = \"http://h/pub\"\n", "s").unwrap();
        assert_eq!(anonymous.url.to_string(), "http://h/pub/");
        assert!(anonymous.login().unwrap().is_none());
    }

    #[test]
    fn refuses_bad_configs_and_says_why() {
        let cases = [
            ("url = \"ftp://reprov:canary-pw@h\"\n", "credentials"),
            ("url = \"sftp://h\"\n", "only ftp://, ftps://"),
            ("url = \"ftp://h\"\nuser = \"u\"\n", "password_file is not"),
            ("url = \"ftp://h\"\npassword_file = \"/p\"\n", "user is not"),
            (
                "url = \"ftp://h\"\npassword = \"canary-pw\"\n",
                "not a valid store config",
            ),
            ("directory = \"x\"\n", "not a valid store config"),
            ("url = \"ftp://h\"\ndirectory = \"a b\"\n", "path"),
        ];
        for (text, why) in cases {
            let message = StoreConfig::parse(text, "store.toml")
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with("store config store.toml: "),
                "{message}"
            );
            assert!(message.contains(why), "{text}: {message}");
            assert!(!message.contains("canary-pw"), "{message}");
        }
    }

    #[test]
    fn password_mode_must_be_owner_only() {
        for (mode, ok) in [
            (0o100600, true),
            (0o400, true),
            (0o640, false),
            (0o604, false),
        ] {
            let result = check_password_mode(mode);
            assert_eq!(result.is_ok(), ok, "{mode:o}");
            if let Err(why) = result {
                assert!(why.contains("chmod 600"), "{why}");
            }
        }
    }

    #[test]
    fn password_file_is_read_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.pass");
        std::fs::write(&path, "canary-pw\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let message = read_password_file(&path).unwrap_err().to_string();
        assert!(message.contains("chmod 600"), "{message}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let secret = read_password_file(&path).unwrap();
        assert_eq!(secret.expose(), "canary-pw");
        assert_eq!(format!("{secret} {secret:?}"), "*** Secret(***)");
    }

    #[test]
    fn names_and_urls_become_sources() {
        let config =
            StoreConfig::parse("url = \"ftp://h:2121\"\ndirectory = \"images\"\n", "s").unwrap();
        let cases = [
            ("B.img", "ftp://h:2121/images/B.img"),
            ("ftp://h:2121/other/B.img", "ftp://h:2121/other/B.img"),
            ("http://elsewhere/B.img", "http://elsewhere/B.img"),
        ];
        for (arg, url) in cases {
            assert_eq!(config.source(arg).unwrap().url.to_string(), url);
        }
    }

    /// The store's CA certificates, like its login, go only to the store's server.
    #[test]
    fn the_ca_file_goes_only_to_the_store() {
        let text = "url = \"https://h\"\nca_file = \"/etc/reprov/ca.pem\"\n";
        let config = StoreConfig::parse(text, "s").unwrap();
        let ca = |arg: &str| config.source(arg).unwrap().tls.ca_file;
        assert_eq!(ca("B.img"), Some(PathBuf::from("/etc/reprov/ca.pem")));
        assert_eq!(ca("https://h/other/B.img"), ca("B.img"));
        assert_eq!(ca("https://elsewhere/B.img"), None);
        assert_eq!(ca("http://h/B.img"), None);
    }
}
