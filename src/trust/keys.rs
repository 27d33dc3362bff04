//! Making keys and signatures, in minisign's own formats (the `minisign` crate), so keys
//! and signatures go both ways between reprov and the stock `minisign` tool.

use super::{key_id_of, Error};

/// A new key pair as the text of its two files.
pub struct KeyPair {
    /// `NAME.key`: the secret key (minisign's format; encrypted when made with a password).
    pub secret: String,
    /// `NAME.pub`: the public key, to install on the appliances.
    pub public: String,
    pub key_id: String,
}

fn sign_err(e: impl std::fmt::Display) -> Error {
    Error::Sign(e.to_string())
}

/// Makes a key pair; with a password, the secret key is encrypted with it (scrypt, as
/// `minisign -G`), without, it is stored in the clear (as `minisign -G -W`).
pub fn generate(password: Option<String>) -> Result<KeyPair, Error> {
    let pair = match password {
        Some(password) => minisign::KeyPair::generate_encrypted_keypair(Some(password)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(sign_err)?;
    let public = pair.pk.to_box().map_err(sign_err)?.into_string();
    let secret = pair
        .sk
        .to_box(Some("reprov secret key"))
        .map_err(sign_err)?
        .into_string();
    let key_id = public
        .lines()
        .nth(1)
        .and_then(key_id_of)
        .ok_or_else(|| sign_err("the new public key has no key id"))?;
    Ok(KeyPair {
        secret,
        public,
        key_id,
    })
}

/// A secret key read for signing, with its password when it is encrypted.
pub struct SigningKey {
    secret: String,
    password: Option<String>,
}

impl SigningKey {
    pub fn new(secret: String, password: Option<String>) -> SigningKey {
        SigningKey { secret, password }
    }

    /// [`sign`] with this key.
    pub fn sign(&self, data: &[u8], comment: &str) -> Result<String, Error> {
        sign(&self.secret, self.password.clone(), data, comment)
    }
}

/// Signs `data` with a secret key (the text of a minisign `.key` file; `password` for an
/// encrypted one) and a trusted comment. Gives the signature's text (a `.minisig`),
/// checked against the key's own public half, so a damaged key signs nothing.
pub fn sign(
    secret: &str,
    password: Option<String>,
    data: &[u8],
    comment: &str,
) -> Result<String, Error> {
    let key_box = minisign::SecretKeyBox::from_string(secret).map_err(sign_err)?;
    let key = match password {
        Some(password) => key_box.into_secret_key(Some(password)).map_err(sign_err)?,
        None => unencrypted(secret)?,
    };
    let signature = minisign::sign(None, &key, data, Some(comment), None)
        .map_err(sign_err)?
        .into_string();
    let public = public_half(&key.to_bytes())
        .ok_or_else(|| sign_err("the secret key is damaged (wrong length)"))?;
    let mut keys = super::Keys::none();
    keys.add(&public).map_err(sign_err)?;
    keys.check_signed(super::Signed::Image, data, Some(&signature))
        .map_err(|_| sign_err("the secret key is damaged: its signature does not verify"))?;
    Ok(signature)
}

/// The secret key of a `.key` file stored unencrypted. The stock `minisign -G -W` leaves
/// such a key's checksum zero, which the `minisign` crate's reader refuses; the key
/// itself is read as it is, and [`sign`] checks what it signs.
fn unencrypted(secret: &str) -> Result<minisign::SecretKey, Error> {
    use base64::Engine;
    let encrypted =
        || sign_err("the secret key is encrypted: give its password with --password-file");
    let line = secret.lines().nth(1).unwrap_or_default().trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line)
        .map_err(|_| sign_err("not a minisign secret key"))?;
    if bytes.get(2..4) != Some(&[0, 0]) {
        return Err(encrypted());
    }
    minisign::SecretKey::from_bytes(&bytes).map_err(sign_err)
}

/// The public key (as a `.pub` file's key line) of a secret key's bytes: algorithm,
/// key id, and the Ed25519 secret key whose last 32 bytes are its public key.
fn public_half(secret: &[u8]) -> Option<String> {
    use base64::Engine;
    const KEYNUM: usize = 2 + 2 + 2 + 32 + 8 + 8;
    let keynum = secret.get(KEYNUM..KEYNUM + 8)?;
    let public = secret.get(KEYNUM + 8 + 32..KEYNUM + 8 + 64)?;
    let bytes = [&b"Ed"[..], keynum, public].concat();
    Some(base64::engine::general_purpose::STANDARD.encode(bytes))
}
