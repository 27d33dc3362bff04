//! Bad images: each refused with a clear error; where it can be known before writing,
//! the target is left exactly as it was.

mod image_support;

use flate2::write::GzEncoder;
use image_support::*;
use sha2::Digest;
use std::fs::File;
use std::io::{Read, Write};

use reprov::image::{self, ApplyOptions, Codec, Kind, MIN_CHUNK_SIZE};
use reprov::io::Show;

const K: u64 = MIN_CHUNK_SIZE;
/// Seven chunks: 0 noisy, 1 random (stored raw), 2 zero, 3 noisy, 4 text, 5 noisy,
/// 6 (1000 bytes) noisy; noisy chunks are random but compress, so they are stored
/// compressed.
const SIZE: u64 = 6 * K + 1000;

/// An image taken apart: the manifest text and the other entries, in order.
#[derive(Clone)]
struct Parts {
    manifest: String,
    entries: Vec<(String, Vec<u8>)>,
}

impl Parts {
    fn of(image: &[u8]) -> Parts {
        let mut archive = tar::Archive::new(image);
        let mut entries = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            entries.push((name, data));
        }
        let (name, manifest) = entries.remove(0);
        assert_eq!(name, "manifest.toml");
        Parts {
            manifest: String::from_utf8(manifest).unwrap(),
            entries,
        }
    }

    /// A tar file of the manifest then the entries, names written raw (even `../x`).
    fn build(&self) -> Vec<u8> {
        let mut all = vec![(
            "manifest.toml".to_string(),
            self.manifest.clone().into_bytes(),
        )];
        all.extend(self.entries.iter().cloned());
        tar_of(&all)
    }

    /// The entry name of chunk `index`, whatever the codec.
    fn chunk_name(&self, index: u64) -> String {
        let prefix = format!("chunks/{index:08}.");
        let (name, _) = self
            .entries
            .iter()
            .find(|(n, _)| n.starts_with(&prefix))
            .unwrap();
        name.clone()
    }

    /// The stored bytes of chunk `index`.
    fn chunk(&self, index: u64) -> Vec<u8> {
        let name = self.chunk_name(index);
        self.entries
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
            .clone()
    }

    fn edit(mut self, from: &str, to: &str) -> Parts {
        assert!(self.manifest.contains(from), "{from}");
        self.manifest = self.manifest.replacen(from, to, 1);
        self
    }

    /// Rewrites the manifest line of chunk `index`.
    fn edit_chunk(mut self, index: u64, f: impl Fn(&str) -> String) -> Parts {
        let key = format!("{{ index = {index}, ");
        self.manifest = self
            .manifest
            .lines()
            .map(|l| {
                if l.contains(&key) {
                    f(l)
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        self
    }

    /// Replaces the data of chunk `index`'s entry, and its stored size and hash in the
    /// manifest: a manifest that tells the truth about stored bytes that are bad.
    fn replace_chunk(self, index: u64, data: Vec<u8>) -> Parts {
        let name = self.chunk_name(index);
        let stored = data.len();
        let sha = image::hex(&sha2::Sha256::digest(&data));
        let mut parts = self.edit_chunk(index, |l| {
            let at = l.find("stored = ").unwrap();
            format!(
                "{}stored = {stored}, stored_sha256 = \"{sha}\" }},",
                &l[..at]
            )
        });
        parts
            .entries
            .iter_mut()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1 = data;
        parts
    }
}

fn tar_of(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in entries {
        let mut h = tar::Header::new_ustar();
        h.as_mut_bytes()[..100].fill(0);
        h.as_mut_bytes()[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Changes the type of the entry named `name` (a pax header `x`, a symlink `2` …).
fn retype(mut image: Vec<u8>, name: &str, kind: u8) -> Vec<u8> {
    let at = (0..image.len())
        .step_by(512)
        .find(|&at| image[at..].starts_with(name.as_bytes()) && image[at + name.len()] == 0)
        .unwrap();
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(&image[at..at + 512]);
    h.as_mut_bytes()[156] = kind;
    h.set_cksum();
    image[at..at + 512].copy_from_slice(h.as_bytes());
    image
}

/// `data` compressed as one chunk of `codec` would be.
fn packed(codec: Codec, data: &[u8]) -> Vec<u8> {
    match codec {
        Codec::Gzip => {
            let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Codec::Zstd => zstd::bulk::compress(data, 3).unwrap(),
    }
}

fn crc_of_line(l: &str) -> String {
    let at = l.find("crc32 = \"").unwrap() + 9;
    let old = &l[at..at + 8];
    let new = format!("{:08x}", u32::from_str_radix(old, 16).unwrap() ^ 1);
    l.replacen(old, &new, 1)
}

fn stored_minus_one(l: &str) -> String {
    let at = l.find("stored = ").unwrap() + 9;
    let digits = l[at..].find(|c: char| !c.is_ascii_digit()).unwrap();
    let n: u64 = l[at..at + digits].parse().unwrap();
    format!("{}{}{}", &l[..at], n - 1, &l[at + digits..])
}

/// Makes the source and its image (zstd); returns the image bytes.
fn good_image(dir: &std::path::Path) -> Vec<u8> {
    good_image_with(dir, Codec::Zstd)
}

/// Makes the source and its image with `codec`; returns the image bytes.
fn good_image_with(dir: &std::path::Path, codec: Codec) -> Vec<u8> {
    let src = dir.join("src");
    let mut file = File::create(&src).unwrap();
    file.set_len(SIZE).unwrap();
    let mut rng = Rng::new(1);
    for (i, data) in [
        noisy(&mut rng, K as usize),
        rng.bytes(K as usize),
        vec![0; K as usize],
        noisy(&mut rng, K as usize),
        text(K as usize),
        noisy(&mut rng, K as usize),
        noisy(&mut rng, 1000),
    ]
    .iter()
    .enumerate()
    {
        write_at(&mut file, i as u64 * K, data);
    }
    let img = dir.join("good.tar");
    let made = create_image_with(&src, &img, K, codec);
    let kinds: Vec<Kind> = made.chunks.iter().map(|c| c.kind).collect();
    use Kind::{Data, Raw, Zero};
    assert_eq!(kinds, [Data, Raw, Zero, Data, Data, Data, Data]);
    std::fs::read(&img).unwrap()
}

/// One bad input: the image bytes, the target size, the error expected, and whether
/// the target must be untouched (the fault is knowable before writing).
struct Case {
    what: &'static str,
    image: Vec<u8>,
    target_len: u64,
    error: String,
    untouched: bool,
}

#[test]
fn bad_zstd_images_are_refused_clearly() {
    bad_images_are_refused_clearly(Codec::Zstd);
}

#[test]
fn bad_gzip_images_are_refused_clearly() {
    bad_images_are_refused_clearly(Codec::Gzip);
}

fn bad_images_are_refused_clearly(codec: Codec) {
    let dir = tempfile::tempdir().unwrap();
    let good = good_image_with(dir.path(), codec);
    let parts = Parts::of(&good);
    let ext = match codec {
        Codec::Gzip => "gz",
        Codec::Zstd => "zst",
    };
    let other_codec = match codec {
        Codec::Gzip => "zstd",
        Codec::Zstd => "gzip",
    };
    // Owned texts for the expectations that name the codec's entries.
    let names: Vec<String> = [
        format!("entry \"../x\" where the file chunks/00000003.{ext} belongs"),
        format!("entry \"chunks/00000003.{ext}\" at byte"),
        format!(
            "entry \"chunks/00000000.{ext}\" where the file chunks/00000000.{other} belongs",
            other = if ext == "gz" { "zst" } else { "gz" }
        ),
    ]
    .into();
    assert_eq!(parts.entries.len(), 6, "six data chunks");
    let last_len = good.len();
    let case = |what, image: Vec<u8>, error: &str, untouched| Case {
        what,
        image,
        target_len: SIZE,
        error: error.to_string(),
        untouched,
    };
    let incomplete = "# reprov image: incomplete, its creation did not finish\n#   \n";
    let mut extra = parts.clone();
    extra.entries.push(("notes.txt".into(), b"hello".to_vec()));
    let mut dotdot_first = parts.clone();
    dotdot_first.entries.clear();
    let mut dotdot_chunk = parts.clone();
    dotdot_chunk.entries[2].0 = "../x".into();
    let mut corrupt = parts.clone();
    corrupt.entries[3].1[100..140].fill(0x55);
    let mut corrupt_raw = parts.clone();
    assert_eq!(corrupt_raw.entries[1].0, "chunks/00000001.raw");
    corrupt_raw.entries[1].1[100] ^= 1;
    let cases = vec![
        case("not a tar file", Rng::new(3).bytes(10_000), "not a reprov image", true),
        case("an empty file", Vec::new(), "not a reprov image", true),
        case(
            "a tar of something else",
            tar_of(&[("hello.txt".into(), b"hi".to_vec())]),
            "first entry is \"hello.txt\"",
            true,
        ),
        case(
            "a tar entry ../x first",
            {
                let mut t = tar_of(&[("../x".into(), parts.manifest.clone().into_bytes())]);
                t.extend(dotdot_first.build().split_off(512 + parts.manifest.len().div_ceil(512) * 512));
                t
            },
            "first entry is \"../x\"",
            true,
        ),
        case("a tar entry ../x for a chunk", dotdot_chunk.build(), &names[0], true),
        case("an unknown version", parts.clone().edit("version = 5", "version = 6").build(), "unknown image version 6", true),
        case("another format", parts.clone().edit("format = \"reprov-image\"", "format = \"other\"").build(), "not a reprov image", true),
        case("an unknown codec", parts.clone().edit(&format!("codec = \"{}\"", codec.as_str()), "codec = \"xz\"").build(), "codec \"xz\"", true),
        case(
            "chunks of the other codec",
            parts.clone().edit(&format!("codec = \"{}\"", codec.as_str()), &format!("codec = \"{other_codec}\"")).build(),
            &names[2],
            true,
        ),
        case("an unfinished create", Parts { manifest: incomplete.into(), ..parts.clone() }.build(), "incomplete image", true),
        case("truncated mid-way", good[..good.len() / 2].to_vec(), "truncated", true),
        case("truncated in the last chunk", good[..last_len - 1024 - 700].to_vec(), "truncated", true),
        case("truncated after the last chunk", good[..last_len - 1024].to_vec(), "truncated", true),
        case("a pax extension header for a chunk", retype(good.clone(), &format!("chunks/00000003.{ext}"), b'x'), &names[1], true),
        case("a symbolic link for a chunk", retype(good.clone(), &format!("chunks/00000004.{ext}"), b'2'), "is not a plain file", true),
        case(
            "a manifest lying about the source size",
            parts.clone().edit(&format!("source_size = {SIZE}"), &format!("source_size = {}", SIZE + K)).build(),
            "7 chunks listed, but a source of 459752 bytes in chunks of 65536 has 8",
            true,
        ),
        case(
            "a manifest lying about the chunk count",
            parts.clone().edit_chunk(6, |_| String::new()).build(),
            "6 chunks listed",
            true,
        ),
        case(
            "a manifest lying about a stored size",
            parts.clone().edit_chunk(3, stored_minus_one).build(),
            "bytes, the manifest says",
            true,
        ),
        case(
            "a manifest claiming an impossible stored size",
            parts.clone().edit_chunk(3, |l| l.replace("stored = ", "stored = 1")).build(),
            "bytes stored for 65536 bytes of data",
            true,
        ),
        case(
            "a stored chunk listed as zero",
            parts.clone().edit_chunk(3, |l| l.replace("\"data\"", "\"zero\"")).build(),
            "zero chunk 3 says",
            true,
        ),
        case("an extra entry", extra.build(), "unexpected entry \"notes.txt\"", true),
        case("a CRC mismatch in the first chunk", parts.clone().edit_chunk(0, crc_of_line).build(), "chunk 0: CRC32 mismatch", true),
        case("a CRC mismatch in a middle chunk", parts.clone().edit_chunk(3, crc_of_line).build(), "chunk 3: CRC32 mismatch", false),
        case("a CRC mismatch in the last chunk", parts.clone().edit_chunk(6, crc_of_line).build(), "chunk 6: CRC32 mismatch", false),
        case("corrupted compressed bytes", corrupt.build(), "chunk 4: SHA-256 mismatch of the stored bytes", false),
        case("corrupted raw bytes", corrupt_raw.build(), "chunk 1: SHA-256 mismatch of the stored bytes", false),
        case("a CRC mismatch in a raw chunk", parts.clone().edit_chunk(1, crc_of_line).build(), "chunk 1: CRC32 mismatch", false),
        case(
            "a raw chunk shorter than its data",
            parts.clone().edit_chunk(1, stored_minus_one).build(),
            "raw chunk 1: 65535 bytes stored for 65536 bytes of data",
            true,
        ),
        case(
            "a compressed chunk listed as raw",
            parts.clone().edit_chunk(3, |l| l.replace("\"data\"", "\"raw\"")).build(),
            "raw chunk 3: ",
            true,
        ),
        case(
            "a raw chunk listed as compressed",
            parts.clone().edit_chunk(1, |l| l.replace("\"raw\"", "\"data\"")).build(),
            "data chunk 1 has no stored_sha256",
            true,
        ),
        case(
            "a chunk decompressing to more than declared",
            parts.clone().replace_chunk(6, packed(codec, &[7; 2000])).build(),
            "chunk 6: decompressing",
            false,
        ),
        case(
            "a chunk decompressing to less than declared",
            parts.clone().replace_chunk(6, packed(codec, &[7; 500])).build(),
            "chunk 6: decompressing",
            false,
        ),
        case(
            "a second frame after a chunk's own",
            parts.clone().replace_chunk(5, [parts.chunk(5), packed(codec, b"more")].concat()).build(),
            "chunk 5: decompressing",
            false,
        ),
        case(
            "garbage after a chunk's frame",
            parts.clone().replace_chunk(5, [parts.chunk(5), b"garbage!".to_vec()].concat()).build(),
            "bytes follow the",
            false,
        ),
        Case {
            target_len: SIZE - 1,
            ..case("an image bigger than the room", good.clone(), "needs 385.0 KiB (394216 bytes) but the target has room for only 385.0 KiB (394215 bytes)", true)
        },
    ];
    assert!(cases.len() >= 12);
    for (n, case) in cases.iter().enumerate() {
        let img = dir.path().join(format!("bad{n}.tar"));
        std::fs::write(&img, &case.image).unwrap();
        let target = dir.path().join("target");
        random_target(&target, case.target_len, n as u64);
        let before = file_crc(&target);
        let err = apply_image(&img, &target).expect_err(case.what).to_string();
        println!("{}: {err}", case.what);
        assert!(
            err.contains(&case.error),
            "{}: got {err:?}, expected {:?}",
            case.what,
            case.error
        );
        if case.untouched {
            assert_eq!(
                file_crc(&target),
                before,
                "{}: the target was written",
                case.what
            );
        }
        if case.target_len == SIZE {
            let verified = image::verify(&mut File::open(&img).unwrap(), Show::Quiet);
            assert!(verified.is_err(), "{}: verify passed", case.what);
        }
    }
    // And the good image passes, so every refusal above is the fault's doing.
    let img = dir.path().join("good.tar");
    let target = dir.path().join("target");
    random_target(&target, SIZE, 0);
    apply_image(&img, &target).unwrap();
    assert_same_prefix(&dir.path().join("src"), &target, SIZE);
}

#[test]
fn resuming_past_the_end_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_image(dir.path());
    let target = dir.path().join("target");
    random_target(&target, SIZE, 1);
    let before = file_crc(&target);
    let mut options = ApplyOptions {
        resume_from: 8,
        ..Default::default()
    };
    let err = image::apply(
        &mut std::io::Cursor::new(good),
        &mut std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&target)
            .unwrap(),
        &mut options,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot resume from chunk 8: the image has only 7 chunks"
    );
    assert_eq!(file_crc(&target), before);
}

/// The image as version 3 wrote it: no stored bytes' hashes, no raw chunks.
fn as_version_3(parts: &Parts) -> Parts {
    let lines: Vec<String> = parts
        .manifest
        .lines()
        .map(|l| match l.find(", stored_sha256 = \"") {
            Some(at) => format!("{}{}", &l[..at], &l[at + 20 + 64 + 1..]),
            None => l.to_string(),
        })
        .collect();
    let manifest = lines.join("\n") + "\n";
    assert!(!manifest.contains("stored_sha256"));
    let mut parts = Parts {
        manifest,
        ..parts.clone()
    }
    .edit("version = 5", "version = 3");
    // Version 3 has no raw chunks: compress them as it would have.
    let codec = if parts.manifest.contains("codec = \"gzip\"") {
        Codec::Gzip
    } else {
        Codec::Zstd
    };
    for i in 0..parts.entries.len() {
        let Some(stem) = parts.entries[i].0.strip_suffix(".raw").map(str::to_string) else {
            continue;
        };
        let index: u64 = stem["chunks/".len()..].parse().unwrap();
        let data = packed(codec, &parts.entries[i].1);
        parts.entries[i] = (format!("{stem}.{}", codec.extension()), data.clone());
        parts = parts.edit_chunk(index, |l| {
            let at = l.find("stored = ").unwrap();
            format!("{}stored = {} }},", &l[..at], data.len()).replace("\"raw\"", "\"data\"")
        });
    }
    parts
}

/// `reprov image apply` checks the whole image before its first write: a corrupt last
/// chunk, found by its stored bytes' hash (version 4 on) or by decompressing every chunk
/// (version 3), leaves the target as it was; a whole version 3 image still applies.
#[test]
fn the_command_line_refuses_a_bad_last_chunk_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let parts = Parts::of(&good_image(dir.path()));
    let mut corrupt = parts.clone();
    let last = corrupt.entries.len() - 1;
    corrupt.entries[last].1[10..40].fill(0x55);
    let target = dir.path().join("target");
    let apply = |image: &[u8]| {
        let path = dir.path().join("img.tar");
        std::fs::write(&path, image).unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_reprov"))
            .args(["image", "apply"])
            .arg(&path)
            .arg("--to")
            .arg(&target)
            .output()
            .unwrap()
    };
    for (what, image, error) in [
        (
            "version 5",
            corrupt.build(),
            "chunk 6: SHA-256 mismatch of the stored bytes",
        ),
        ("version 3", as_version_3(&corrupt).build(), "chunk 6: "),
    ] {
        random_target(&target, SIZE, 9);
        let before = file_crc(&target);
        let out = apply(&image);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: applied");
        assert!(stderr.contains(error), "{what}: {stderr}");
        assert_eq!(file_crc(&target), before, "{what}: the target was written");
    }
    random_target(&target, SIZE, 9);
    let out = apply(&as_version_3(&parts).build());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_prefix(&dir.path().join("src"), &target, SIZE);
}
