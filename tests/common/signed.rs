//! Signed images and the ways an attacker would break them, for the trust tests of the
//! command line (tests/trust.rs) and of the recovery's runner (tests/recovery_runner.rs).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use super::fixtures::{fat_nos, image_of};
use reprov::trust::{self, KeyPair};

const MIB: u64 = 1 << 20;

/// Two key pairs on disk: `ours` is trusted (its `.pub` alone in `trusted/`), `theirs`
/// is not.
pub struct TestKeys {
    pub ours: KeyPair,
    pub theirs: KeyPair,
    pub trusted_dir: PathBuf,
    pub ours_pub: PathBuf,
    pub ours_key: PathBuf,
    pub theirs_pub: PathBuf,
}

impl TestKeys {
    pub fn new(dir: &Path) -> TestKeys {
        let (ours, theirs) = (
            trust::generate(None).unwrap(),
            trust::generate(None).unwrap(),
        );
        let trusted_dir = dir.join("trusted");
        std::fs::create_dir_all(&trusted_dir).unwrap();
        std::fs::write(trusted_dir.join("ours.pub"), &ours.public).unwrap();
        let (ours_pub, ours_key, theirs_pub) = (
            dir.join("ours.pub"),
            dir.join("ours.key"),
            dir.join("theirs.pub"),
        );
        std::fs::write(&ours_pub, &ours.public).unwrap();
        std::fs::write(&ours_key, &ours.secret).unwrap();
        std::fs::write(&theirs_pub, &theirs.public).unwrap();
        TestKeys {
            ours,
            theirs,
            trusted_dir,
            ours_pub,
            ours_key,
            theirs_pub,
        }
    }

    /// The machine's trusted keys, as the recovery loads them.
    pub fn trusted(&self) -> trust::Keys {
        trust::Keys::load_dir(&self.trusted_dir).unwrap()
    }
}

/// `image` (tar bytes) with `signature` as its `manifest.toml.minisig`.
pub fn with_signature(image: &[u8], signature: &str) -> Vec<u8> {
    let mut file = Cursor::new(image.to_vec());
    let len = reprov::image::write_signature(&mut file, signature, 0).unwrap();
    let mut bytes = file.into_inner();
    bytes.truncate(usize::try_from(len).unwrap());
    bytes
}

/// `image` signed with `key`, as `reprov image sign` does.
pub fn signed(image: &[u8], key: &KeyPair) -> Vec<u8> {
    let mut cursor = Cursor::new(image);
    let layout = reprov::image::open(&mut cursor).unwrap();
    let manifest = layout.manifest_bytes(&mut cursor).unwrap();
    let signature = trust::sign(&key.secret, None, &manifest, "image:test").unwrap();
    with_signature(image, &signature)
}

/// Where each tar entry's data lies: (path, offset, length).
fn entries(image: &[u8]) -> Vec<(String, usize, usize)> {
    let mut archive = tar::Archive::new(Cursor::new(image));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let (at, len) = (e.raw_file_position() as usize, e.size() as usize);
            (path, at, len)
        })
        .collect()
}

/// Five bytes at `at` in a chunk of `len` bytes that, XORed into any chunk of that
/// length, leave its CRC32 as it was (CRC32 is linear; solved over GF(2)) — what an
/// attacker does to get a change past a CRC check.
fn crc_preserving_change(len: usize, at: usize) -> [u8; 5] {
    let zero = crc32fast::hash(&vec![0u8; len]);
    // The CRC change a single bit makes (linear: the zero message's CRC cancels out).
    let effect = |bit: usize| {
        let mut v = vec![0u8; len];
        v[at + bit / 8] ^= 1 << (bit % 8);
        crc32fast::hash(&v) ^ zero
    };
    let target = effect(0); // bit 0 of byte 0 is set; bits 8..40 must undo it
    let mut rows: Vec<(u32, u64)> = (8..40).map(|b| (effect(b), 1u64 << b)).collect();
    // Gaussian elimination: a basis of the 32 effects, each with the bits that make it.
    let mut basis: Vec<(u32, u64)> = Vec::new();
    for (mut e, mut bits) in rows.drain(..) {
        for &(be, bb) in &basis {
            if e ^ be < e {
                e ^= be;
                bits ^= bb;
            }
        }
        if e != 0 {
            basis.push((e, bits));
            basis.sort_by_key(|b| std::cmp::Reverse(b.0));
        }
    }
    let (mut rest, mut bits) = (target, 1u64);
    for &(be, bb) in &basis {
        if rest ^ be < rest {
            rest ^= be;
            bits ^= bb;
        }
    }
    assert_eq!(rest, 0, "the 32 bits span every CRC change");
    let mut change = [0u8; 5];
    for (i, byte) in change.iter_mut().enumerate() {
        *byte = (bits >> (8 * i)) as u8;
    }
    change
}

/// The images an attacker could offer instead of `good` (signed by the trusted key),
/// each with what its refusal says. `b` is the partition `good` was made from, `c`
/// another one.
pub fn attacks(
    keys: &TestKeys,
    b: &[u8],
    good: &[u8],
) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let unsigned = image_of(b, "B");
    let c = image_of(&fat_nos(8 * MIB, "C", 2 * MIB), "C");
    let c_signature = {
        let mut cursor = Cursor::new(&c[..]);
        let layout = reprov::image::open(&mut cursor).unwrap();
        let manifest = layout.manifest_bytes(&mut cursor).unwrap();
        trust::sign(&keys.ours.secret, None, &manifest, "image:C").unwrap()
    };
    let good_signature = {
        let mut cursor = Cursor::new(good);
        reprov::image::open(&mut cursor).unwrap().signature.unwrap()
    };

    // The manifest changed after signing (its padding: still a valid manifest).
    let mut tampered_manifest = good.to_vec();
    let (_, at, len) = entries(good)[0].clone();
    let pad = tampered_manifest[at..at + len]
        .windows(2)
        .rposition(|w| w == b"  ")
        .expect("the manifest is padded with spaces")
        + at;
    tampered_manifest[pad] = b'x';

    // A chunk replaced by another of the same size whose data has the same CRC32: only
    // the signed SHA-256 tells. The chunk is stored raw (incompressible), so a change
    // keeps its stored size.
    let tampered_chunk = {
        let chunk_len = MIB as usize;
        let mut cursor = Cursor::new(good);
        let layout = reprov::image::open(&mut cursor).unwrap();
        let raw = layout
            .manifest
            .chunks
            .iter()
            .find(|c| c.kind == reprov::image::Kind::Raw)
            .expect("an incompressible chunk, stored raw");
        let index = raw.index as usize;
        let at = 4096;
        let mut forged = b.to_vec();
        for (i, d) in crc_preserving_change(chunk_len, at).iter().enumerate() {
            forged[index * chunk_len + at + i] ^= d;
        }
        let chunk = &forged[index * chunk_len..][..chunk_len];
        assert_eq!(
            crc32fast::hash(chunk),
            raw.crc32,
            "the change keeps the CRC32"
        );
        let forged_image = image_of(&forged, "B");
        let name = reprov::image::chunk_path(raw.index, raw.kind, layout.manifest.codec);
        let find = |image: &[u8]| {
            entries(image)
                .into_iter()
                .find(|(path, _, _)| *path == name)
                .unwrap()
        };
        let ((_, to, len), (_, from, forged_len)) = (find(good), find(&forged_image));
        assert_eq!(len, forged_len, "a raw chunk keeps its stored size");
        let mut bytes = good.to_vec();
        bytes[to..to + len].copy_from_slice(&forged_image[from..from + len]);
        bytes
    };

    let truncated = &good_signature[..good_signature.len() - 30];
    vec![
        ("unsigned", unsigned.clone(), "is not signed"),
        (
            "signed by an untrusted key",
            signed(&unsigned, &keys.theirs),
            "which this machine does not trust",
        ),
        (
            "a manifest changed after signing",
            tampered_manifest,
            "does not match its manifest",
        ),
        (
            "a chunk changed, its CRC32 forged to match",
            tampered_chunk,
            "SHA-256 mismatch",
        ),
        (
            "another image's signature",
            with_signature(&unsigned, &c_signature),
            "does not match its manifest",
        ),
        (
            "a truncated signature",
            with_signature(&unsigned, truncated),
            "not a minisign signature",
        ),
    ]
}
