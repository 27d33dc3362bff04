//! Who may put an image on this appliance: minisign signatures (Ed25519) over an image's
//! manifest, checked against trusted public keys, failing closed (see `docs/trust.md`).
//!
//! The chain of trust: a trusted key signs the manifest's exact bytes; the manifest
//! holds the SHA-256 of every data chunk; every reader checks each chunk against it as
//! it decompresses (`image::verify`, `image::apply`). With no key configured, images are
//! checked for accidents only (CRC32, SHA-256) and every run says so.

mod keys;

pub use keys::{generate, sign, KeyPair, SigningKey};

use std::fmt;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

use crate::image::{self, Layout, Manifest, HASHED_VERSION, SIGNATURE_PATH};
use crate::io::Show;

/// Where the trusted public keys live: on the running appliance, and in the recovery
/// initramfs (put there by `install-system --trust`).
pub const KEYS_DIR: &str = "/etc/reprov/keys";
/// The file name extension of a public key (as minisign writes it).
pub const PUBLIC_EXTENSION: &str = "pub";

/// Why an image (or a key) is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the {what} is not signed, and this machine trusts only what is signed by {}; \
         sign it with `{}`",
        list(.trusted),
        what.how_to_sign()
    )]
    Unsigned { what: Signed, trusted: Vec<String> },
    #[error(
        "the {what} is signed by key {key_id}, which this machine does not trust \
         (it trusts {}); sign it with a trusted key, or install key {key_id} with \
         `install-system --trust` / in {KEYS_DIR}",
        list(.trusted)
    )]
    UnknownKey {
        what: Signed,
        key_id: String,
        trusted: Vec<String>,
    },
    #[error(
        "the {what}'s signature by key {key_id} does not match {}: it was changed after \
         signing, or the signature is another {what}'s",
        what.signed_part()
    )]
    BadSignature { what: Signed, key_id: String },
    #[error("the image's {SIGNATURE_PATH} is not a minisign signature: {why}")]
    Malformed { why: String },
    #[error(
        "the image's manifest is version {version}, which has no SHA-256 of its chunks, so a \
         signature cannot vouch for them; create the image again with this reprov (version \
         {HASHED_VERSION} or later) and sign it"
    )]
    Unhashed { version: u32 },
    #[error("trusted key {}: {why}", .path.display())]
    BadKey { path: PathBuf, why: String },
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Image(#[from] image::Error),
    #[error("{0}")]
    Sign(String),
}

/// What a signature vouches for; the refusals name it and say how to sign one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    Image,
    DesiredState,
}

impl Signed {
    fn how_to_sign(self) -> &'static str {
        match self {
            Signed::Image => "reprov image sign --key KEY.key IMAGE",
            Signed::DesiredState => "reprov fleet publish --key KEY.key ...",
        }
    }

    fn signed_part(self) -> &'static str {
        match self {
            Signed::Image => "its manifest",
            Signed::DesiredState => "its text",
        }
    }
}

impl fmt::Display for Signed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signed::Image => "image",
            Signed::DesiredState => "desired state",
        })
    }
}

fn list(ids: &[String]) -> String {
    match ids {
        [] => "no key".into(),
        [one] => format!("key {one}"),
        many => format!("keys {}", many.join(", ")),
    }
}

/// Who signed an image, as the signature says (and, once checked, a trusted key proves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The key id as minisign prints it: 16 upper-case hex digits.
    pub key_id: String,
    /// The signature's trusted comment (signed too): e.g. `timestamp:… file:…`.
    pub comment: String,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Trusted(signer) => write!(f, "signed by trusted {signer}"),
            Verdict::NotChecked => write!(f, "signature not checked (no trusted key)"),
        }
    }
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {} ({:?})", self.key_id, self.comment)
    }
}

/// What a check of an image found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by a trusted key, and the manifest is the one it signed.
    Trusted(Signer),
    /// No key is configured: the image was not checked (only its CRC32 and SHA-256 are).
    NotChecked,
}

/// A signature as read from an image, decoded but not yet checked.
pub struct Signature {
    signer: Signer,
    inner: minisign_verify::Signature,
}

impl Signature {
    /// Decodes a minisign signature (`manifest.toml.minisig`). Pure.
    pub fn decode(text: &str) -> Result<Signature, Error> {
        let malformed = |why: &str| Error::Malformed { why: why.into() };
        let inner = minisign_verify::Signature::decode(text).map_err(|e| match e {
            minisign_verify::Error::UnsupportedAlgorithm => {
                malformed("an algorithm minisign does not have")
            }
            _ => malformed("truncated or garbled (four lines: comment, signature, trusted comment, global signature)"),
        })?;
        let line = text.lines().nth(1).unwrap_or_default();
        let key_id = key_id_of(line).ok_or_else(|| malformed("no key id"))?;
        let signer = Signer {
            key_id,
            comment: inner.trusted_comment().to_string(),
        };
        Ok(Signature { signer, inner })
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }
}

/// The key id in a minisign key or signature line (base64: two algorithm bytes, then the
/// 8-byte key id), as minisign prints it.
fn key_id_of(base64_line: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64_line.trim())
        .ok()?;
    let id: [u8; 8] = bytes.get(2..10)?.try_into().ok()?;
    Some(format!("{:016X}", u64::from_le_bytes(id)))
}

/// The public keys this machine trusts. Empty: images are not checked (and every run
/// says so). A key file that cannot be read is an error, never a key less: a machine
/// meant to check images must not quietly stop checking them.
#[derive(Debug, Default, Clone)]
pub struct Keys {
    keys: Vec<(String, minisign_verify::PublicKey)>,
}

impl Keys {
    /// No key: nothing is checked.
    pub fn none() -> Keys {
        Keys::default()
    }

    /// Every `*.pub` file in `dir`; a missing directory holds no key.
    pub fn load_dir(dir: &Path) -> Result<Keys, Error> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Keys::none()),
            Err(source) => {
                return Err(Error::Io {
                    what: "reading the key directory",
                    path: dir.to_path_buf(),
                    source,
                })
            }
        };
        let mut paths = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|source| Error::Io {
                    what: "reading the key directory",
                    path: dir.to_path_buf(),
                    source,
                })?
                .path();
            if path.extension().is_some_and(|e| e == PUBLIC_EXTENSION) {
                paths.push(path);
            }
        }
        paths.sort();
        Keys::load_files(&paths)
    }

    /// These key files (minisign `.pub` files: a comment line and the key).
    pub fn load_files(paths: &[PathBuf]) -> Result<Keys, Error> {
        let mut keys = Keys::none();
        for path in paths {
            let text =
                crate::io::read_regular_to_string(path, 4096).map_err(|source| Error::Io {
                    what: "reading trusted key",
                    path: path.clone(),
                    source,
                })?;
            keys.add(&text).map_err(|why| Error::BadKey {
                path: path.clone(),
                why,
            })?;
        }
        Ok(keys)
    }

    /// Adds a key from the text of a `.pub` file (or its bare base64 line).
    pub fn add(&mut self, text: &str) -> Result<(), String> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .ok_or("empty: no public key in it")?;
        let key = minisign_verify::PublicKey::from_base64(line)
            .map_err(|_| "not a minisign public key".to_string())?;
        let id = key_id_of(line).ok_or("not a minisign public key")?;
        if !self.keys.iter().any(|(known, _)| *known == id) {
            self.keys.push((id, key));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The ids of the trusted keys.
    pub fn ids(&self) -> Vec<String> {
        self.keys.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Checks `data` against `signature` (the text of a `.minisig`): it must be signed
    /// by one of these keys. With no key, nothing is checked.
    pub fn check_signed(
        &self,
        what: Signed,
        data: &[u8],
        signature: Option<&str>,
    ) -> Result<Verdict, Error> {
        if self.is_empty() {
            return Ok(Verdict::NotChecked);
        }
        let Some(text) = signature else {
            return Err(Error::Unsigned {
                what,
                trusted: self.ids(),
            });
        };
        let signature = Signature::decode(text)?;
        let signer = signature.signer.clone();
        let Some((_, key)) = self.keys.iter().find(|(id, _)| *id == signer.key_id) else {
            return Err(Error::UnknownKey {
                what,
                key_id: signer.key_id,
                trusted: self.ids(),
            });
        };
        // Legacy (non-prehashed) signatures are accepted as minisign -V does by default.
        key.verify(data, &signature.inner, true)
            .map_err(|_| Error::BadSignature {
                what,
                key_id: signer.key_id.clone(),
            })?;
        Ok(Verdict::Trusted(signer))
    }

    /// Checks an opened image: signed by a trusted key over exactly its manifest, and a
    /// manifest that hashes its chunks (which `verify`/`apply` then check one by one).
    /// Reads the manifest again; writes nothing.
    pub fn check_image<R: Read + Seek>(
        &self,
        image: &mut R,
        layout: &Layout,
    ) -> Result<Verdict, Error> {
        if self.is_empty() {
            return Ok(Verdict::NotChecked);
        }
        let manifest = layout.manifest_bytes(image)?;
        let verdict = self.check_signed(Signed::Image, &manifest, layout.signature.as_deref())?;
        if layout.manifest.version < HASHED_VERSION {
            return Err(Error::Unhashed {
                version: layout.manifest.version,
            });
        }
        Ok(verdict)
    }

    /// Opens and checks an image as this machine must before it writes one: the
    /// signature first (an untrusted image is refused before a chunk is decompressed),
    /// then every chunk against the manifest's CRC32 and SHA-256. Reads only.
    pub fn verify_image<R: Read + Seek>(
        &self,
        image: &mut R,
        show: Show,
    ) -> Result<(Manifest, Verdict), Error> {
        let layout = image::open(image)?;
        let verdict = self.check_image(image, &layout)?;
        let manifest = image::verify_opened(image, layout, show)?;
        Ok((manifest, verdict))
    }

    /// A line for the log of every run that checks images: which keys, or a warning.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            format!(
                "no trusted key in {KEYS_DIR}: images are NOT checked for who made them \
                 (see docs/trust.md)"
            )
        } else {
            format!("images must be signed by {}", list(&self.ids()))
        }
    }
}

#[cfg(test)]
mod tests;
