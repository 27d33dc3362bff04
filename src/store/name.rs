//! Image names: plain file names in `images/` on the images partition.

use std::fmt;

/// Longest image name, in bytes (FAT long names allow 255 UTF-16 units; we want fewer).
pub const MAX_IMAGE_NAME_BYTES: usize = 128;

/// Suffix of an image still being copied in (see `Store::add_image`).
pub const PARTIAL_SUFFIX: &str = ".part";

/// Characters FAT refuses in a long file name, besides control characters.
const FAT_FORBIDDEN: &[char] = &['/', '\\', ':', '*', '?', '"', '<', '>', '|'];

/// A validated image file name: one path component that cannot leave `images/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageName(String);

impl ImageName {
    /// Checks `name`; the error says what is wrong with it (pure).
    pub fn new(name: &str) -> Result<Self, String> {
        if name.is_empty() {
            return Err("an image name must not be empty".into());
        }
        if name.len() > MAX_IMAGE_NAME_BYTES {
            return Err(format!(
                "image name is {} bytes long, more than the {MAX_IMAGE_NAME_BYTES} allowed",
                name.len()
            ));
        }
        if let Some(c) = name.chars().find(|c| c.is_control()) {
            return Err(format!(
                "image name {name:?} contains the control character {:?}",
                c
            ));
        }
        if let Some(c) = name.chars().find(|c| FAT_FORBIDDEN.contains(c)) {
            return Err(format!(
                "image name {name:?} contains {c:?}: it must be a plain file name, not a path"
            ));
        }
        if name.contains("..") {
            return Err(format!("image name {name:?} contains \"..\""));
        }
        // FAT silently drops trailing dots and spaces; a leading space is a trap for shells.
        if name.starts_with(char::is_whitespace)
            || name.ends_with(char::is_whitespace)
            || name.ends_with('.')
        {
            return Err(format!(
                "image name {name:?} starts or ends with a space or ends with a dot"
            ));
        }
        if super::parts::is_continuation(name) {
            return Err(format!(
                "image name {name:?} ends like a part of a bigger image (.002 … .999)"
            ));
        }
        if name.ends_with(PARTIAL_SUFFIX) {
            return Err(format!(
                "image name {name:?} ends with {PARTIAL_SUFFIX:?}, which marks unfinished copies"
            ));
        }
        Ok(ImageName(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_pass() {
        for name in ["m1-SN42.rpi", "nos image.img", "ä.img", &"x".repeat(128)] {
            assert_eq!(ImageName::new(name).unwrap().as_str(), name);
        }
    }

    #[test]
    fn paths_and_odd_names_are_refused() {
        let long = "x".repeat(129);
        let cases = [
            ("", "empty"),
            ("../x", "'/'"),
            ("..", "\"..\""),
            ("a..b", "\"..\""),
            ("a/b", "'/'"),
            ("a\\b", "'\\\\'"),
            ("a\nb", "control character"),
            ("a\u{7f}b", "control character"),
            ("a:b", "':'"),
            (long.as_str(), "129 bytes"),
            (" a", "starts or ends"),
            ("a.", "ends with a dot"),
            ("x.img.part", "unfinished copies"),
        ];
        for (name, want) in cases {
            let err = ImageName::new(name).unwrap_err();
            assert!(err.contains(want), "{name:?}: {err:?} lacks {want:?}");
        }
    }
}
