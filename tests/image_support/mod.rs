//! Helpers shared by the image tests: reproducible varied data on sparse files.
#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use reprov::image::{self, ApplyOptions, Codec, CreateOptions, Manifest};

/// A small reproducible pseudo-random generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut buf = vec![0; len];
        self.fill(&mut buf);
        buf
    }
}

/// Random bytes that still compress (to about half: each holds 4 random bits), so they
/// are stored compressed, not raw.
pub fn noisy(rng: &mut Rng, len: usize) -> Vec<u8> {
    rng.bytes(len).into_iter().map(|b| b & 0x0f).collect()
}

/// Text that compresses like a file system's text files.
pub fn text(len: usize) -> Vec<u8> {
    let line = b"reprov: appliance servers that re-provision themselves, line ";
    let mut out = Vec::with_capacity(len + 80);
    let mut n = 0u64;
    while out.len() < len {
        out.extend_from_slice(line);
        out.extend_from_slice(format!("{n}\n").as_bytes());
        n += 1;
    }
    out.truncate(len);
    out
}

pub fn write_at(file: &mut File, offset: u64, data: &[u8]) {
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(data).unwrap();
}

/// A sparse file of `size` bytes with varied content: random and text regions at
/// spread-out places (some crossing chunk edges), zeros elsewhere, and the last byte set.
pub fn varied_source(path: &Path, size: u64, seed: u64) -> File {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    file.set_len(size).unwrap();
    let mut rng = Rng::new(seed);
    for (i, at) in [0, size / 3, size / 2 + 12345, size.saturating_sub(70_000)]
        .into_iter()
        .enumerate()
    {
        let at = at.min(size);
        let len = (50_000 + rng.next() % 50_000).min(size - at) as usize;
        let data = if i % 2 == 0 {
            rng.bytes(len)
        } else {
            text(len)
        };
        write_at(&mut file, at, &data);
    }
    if size > 0 {
        write_at(&mut file, size - 1, &[0x5A]);
    }
    file
}

/// A file of `size` bytes filled with random bytes (so stale bytes would show).
pub fn random_target(path: &Path, size: u64, seed: u64) -> File {
    let mut file = File::create(path).unwrap();
    let mut rng = Rng::new(seed);
    let mut left = size;
    let mut buf = vec![0; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        file.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

/// Creates an image of `source` at `out` with the given chunk size (zstd, the default).
pub fn create_image(source: &Path, out: &Path, chunk_size: u64) -> Manifest {
    create_image_with(source, out, chunk_size, Codec::Zstd)
}

/// Creates an image of `source` at `out` with the given chunk size and codec.
pub fn create_image_with(source: &Path, out: &Path, chunk_size: u64, codec: Codec) -> Manifest {
    let mut src = File::open(source).unwrap();
    let mut img = File::create(out).unwrap();
    let mut options = CreateOptions::new("test-0001");
    options.description = "test appliance 1.0".into();
    options.chunk_size = chunk_size;
    options.codec = codec;
    image::create(&mut src, &mut img, &options).unwrap()
}

/// Applies the image at `image` onto the file `target`.
pub fn apply_image(image_path: &Path, target: &Path) -> Result<Manifest, image::Error> {
    let mut img = File::open(image_path).unwrap();
    let mut dst = OpenOptions::new()
        .read(true)
        .write(true)
        .open(target)
        .unwrap();
    image::apply(&mut img, &mut dst, &mut ApplyOptions::default())
}

/// Compares the first `len` bytes of two files, in pieces; says where they differ.
pub fn assert_same_prefix(a: &Path, b: &Path, len: u64) {
    assert_same_range(a, b, 0, len)
}

/// Compares bytes `[start, start + len)` of two files, in pieces; says where they differ.
pub fn assert_same_range(a: &Path, b: &Path, start: u64, len: u64) {
    let (mut fa, mut fb) = (File::open(a).unwrap(), File::open(b).unwrap());
    fa.seek(SeekFrom::Start(start)).unwrap();
    fb.seek(SeekFrom::Start(start)).unwrap();
    let (mut ba, mut bb) = (vec![0; 4 << 20], vec![0; 4 << 20]);
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(ba.len() as u64) as usize;
        fa.read_exact(&mut ba[..n]).unwrap();
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            let i = (0..n).find(|&i| ba[i] != bb[i]).unwrap();
            panic!(
                "{} and {} differ at byte {}",
                a.display(),
                b.display(),
                start + at + i as u64
            );
        }
        at += n as u64;
    }
}

/// CRC32 of a whole file: a cheap fingerprint to show a target was not written.
pub fn file_crc(path: &Path) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    let mut file = File::open(path).unwrap();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return hasher.finalize();
        }
        hasher.update(&buf[..n]);
    }
}
