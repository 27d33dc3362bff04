//! Images of used file systems: only what the file system uses is stored, however much
//! old data its free blocks hold, and the apply writes zeros there, never the target's
//! old bytes. Each file system is made by its own mkfs, filled, then has a large file
//! deleted (its blocks keep their bytes); the image is compared in size with
//! `partclone | gzip -1` and, applied onto a target full of random bytes, checked with
//! the file system's own fsck and file by file against what was put in.

mod image_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use image_support::{random_target, Rng};

const MIB: u64 = 1 << 20;

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {program} (scripts/deps installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn reprov(args: &[&str]) -> String {
    run(env!("CARGO_BIN_EXE_reprov"), args)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The files a file system is filled with: incompressible data, text, a nested
/// directory, an empty file; and `big`, which is deleted again.
fn fill(dir: &Path, big_mib: u64) {
    let mut rng = Rng::new(11);
    std::fs::create_dir_all(dir.join("etc/app")).unwrap();
    std::fs::write(dir.join("keep.bin"), rng.bytes((12 * MIB) as usize)).unwrap();
    std::fs::write(dir.join("etc/app/conf.txt"), image_support::text(300_000)).unwrap();
    std::fs::write(dir.join("etc/empty"), b"").unwrap();
    for n in 0..20 {
        std::fs::write(
            dir.join(format!("etc/small-{n}")),
            rng.bytes(5000 + n * 777),
        )
        .unwrap();
    }
    std::fs::write(dir.join("big"), rng.bytes((big_mib * MIB) as usize)).unwrap();
}

/// Every regular file under `dir` (relative path, bytes), sorted.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Images `fs` with reprov (`codec`), returns (image path, its size in bytes).
fn image(fs: &Path, dir: &Path, codec: &str) -> (PathBuf, u64) {
    let img = dir.join(format!("image-{codec}.tar"));
    reprov(&[
        "image",
        "create",
        "--from",
        s(fs),
        "--out",
        s(&img),
        "--name",
        "fs",
        "--codec",
        codec,
    ]);
    let len = std::fs::metadata(&img).unwrap().len();
    (img, len)
}

/// The size of `partclone.KIND -c | gzip -1` of `fs`.
fn partclone_gzip_size(kind: &str, fs: &Path, dir: &Path) -> u64 {
    let script = format!(
        "partclone.{kind} -c -s '{}' -o - -L '{}' 2>/dev/null | gzip -1 | wc -c",
        s(fs),
        s(&dir.join("partclone.log"))
    );
    run("bash", &["-euo", "pipefail", "-c", &script])
        .trim()
        .parse()
        .unwrap()
}

/// Applies `img` onto a target of `len` random bytes; returns the target.
fn apply_onto_random(img: &Path, dir: &Path, len: u64) -> PathBuf {
    let target = dir.join("target.img");
    random_target(&target, len, 99);
    reprov(&["image", "apply", s(img), "--to", s(&target)]);
    target
}

/// The target holds the source's bytes in every block its file system uses and zeros in
/// every other — never the source's old data nor the target's own bytes.
fn assert_used_blocks_only(name: &str, source: &Path, target: &Path) {
    let (source, target) = (
        std::fs::read(source).unwrap(),
        std::fs::read(target).unwrap(),
    );
    let mut cursor = std::io::Cursor::new(&source);
    let len = source.len() as u64;
    let found = reprov::filesystem::detect(&mut cursor, len).filesystem;
    let used = reprov::filesystem::used_blocks(&mut cursor, len, found).unwrap();
    let block = used.block_size() as usize;
    let (mut used_count, mut zero_count) = (0, 0);
    for (index, (want, got)) in source.chunks(block).zip(target.chunks(block)).enumerate() {
        if used.is_used(index as u64) {
            assert!(want == got, "{name}: used block {index} differs");
            used_count += 1;
        } else {
            assert!(
                got.iter().all(|&b| b == 0),
                "{name}: free block {index} is not zeros"
            );
            zero_count += 1;
        }
    }
    assert!(
        used_count > 0 && zero_count > 0,
        "{name}: {used_count} used, {zero_count} free"
    );
}

/// The mkfs.ext4 variants: the default (4 KiB blocks, 64bit, metadata_csum, flex_bg),
/// 1 KiB blocks with the older uninit_bg checksums, no flex_bg and no sparse_super,
/// ext3 and ext2.
const EXT_VARIANTS: &[(&str, &[&str])] = &[
    ("ext4", &["-t", "ext4"]),
    (
        "ext4-1k-uninit_bg",
        &[
            "-t",
            "ext4",
            "-b",
            "1024",
            "-O",
            "^64bit,^metadata_csum,uninit_bg",
        ],
    ),
    (
        "ext4-no-flex-no-sparse",
        &["-t", "ext4", "-O", "^flex_bg,^sparse_super,^resize_inode"],
    ),
    ("ext3", &["-t", "ext3"]),
    ("ext2", &["-t", "ext2"]),
];

#[test]
fn used_ext_file_systems_image_what_they_use_and_apply_clean() {
    for (name, options) in EXT_VARIANTS {
        let dir = tempfile::tempdir().unwrap();
        let (content, fs) = (dir.path().join("content"), dir.path().join("fs.img"));
        // The main case is larger, so the deleted file dwarfs what is kept.
        let (size, big) = if *name == "ext4" {
            (256 * MIB, 150)
        } else {
            (96 * MIB, 40)
        };
        fill(&content, big);
        std::fs::File::create(&fs).unwrap().set_len(size).unwrap();
        let mut args: Vec<&str> = vec!["-q", "-F", "-d", s(&content)];
        args.extend_from_slice(options);
        args.push(s(&fs));
        run("mkfs.ext4", &args);
        run("debugfs", &["-w", "-R", "rm big", s(&fs)]);
        std::fs::remove_file(content.join("big")).unwrap();

        let (img, ours) = image(&fs, dir.path(), "gzip");
        let info: serde_json::Value =
            serde_json::from_str(&reprov(&["image", "info", "--json", s(&img)])).unwrap();
        assert_eq!(info["capture"], "used-blocks", "{name}");
        assert_eq!(info["filesystem"], "ext4", "{name}");
        assert_eq!(info["partition_type"], "0x83", "{name}");
        assert!(info["free_chunks"].as_u64().unwrap() > 0, "{name}: {info}");
        // The deleted file's old bytes are not stored: far less than it.
        assert!(ours < big * MIB / 2, "{name}: {ours} bytes stored");
        if *name == "ext4" {
            let partclone = partclone_gzip_size("ext4", &fs, dir.path());
            let (_, zstd) = image(&fs, dir.path(), "zstd");
            println!("{name}: reprov gzip {ours} B, reprov zstd {zstd} B, partclone.ext4 | gzip -1 {partclone} B");
            assert!(
                ours as f64 <= partclone as f64 * 1.10,
                "{name}: reprov {ours} B is more than 10 % over partclone | gzip -1 {partclone} B"
            );
            assert!(zstd <= ours, "{name}: zstd {zstd} B, gzip {ours} B");
            // --all-blocks keeps the deleted file's old bytes.
            let whole = dir.path().join("whole.tar");
            reprov(&[
                "image",
                "create",
                "--from",
                s(&fs),
                "--out",
                s(&whole),
                "--all-blocks",
            ]);
            let info: serde_json::Value =
                serde_json::from_str(&reprov(&["image", "info", "--json", s(&whole)])).unwrap();
            assert_eq!(info["capture"], "all-blocks");
            assert!(info["stored_bytes"].as_u64().unwrap() > big * MIB, "{info}");
        }

        let target = apply_onto_random(&img, dir.path(), size);
        run("e2fsck", &["-fn", s(&target)]);
        assert_used_blocks_only(name, &fs, &target);
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        run(
            "debugfs",
            &["-R", &format!("rdump / {}", s(&out)), s(&target)],
        );
        let got: Vec<_> = files_under(&out)
            .into_iter()
            .filter(|(p, _)| !p.starts_with("lost+found"))
            .collect();
        assert_eq!(
            got,
            files_under(&content),
            "{name}: the files read back differ"
        );
    }
}

#[test]
fn used_fat_file_systems_image_what_they_use_and_apply_clean() {
    for (name, fat, size, big) in [
        ("fat32", "32", 256 * MIB, 150),
        ("fat16", "16", 96 * MIB, 40),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (content, fs) = (dir.path().join("content"), dir.path().join("fs.img"));
        fill(&content, big);
        run(
            "mkfs.fat",
            &["-C", "-F", fat, s(&fs), &(size / 1024).to_string()],
        );
        let mut copy = vec!["-i", s(&fs), "-s"];
        let entries: Vec<PathBuf> = std::fs::read_dir(&content)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        copy.extend(entries.iter().map(|p| s(p)));
        copy.push("::/");
        run("mcopy", &copy);
        run("mdel", &["-i", s(&fs), "::/big"]);
        std::fs::remove_file(content.join("big")).unwrap();

        let (img, ours) = image(&fs, dir.path(), "gzip");
        let info: serde_json::Value =
            serde_json::from_str(&reprov(&["image", "info", "--json", s(&img)])).unwrap();
        assert_eq!(info["capture"], "used-blocks", "{name}");
        assert_eq!(info["filesystem"], "fat", "{name}");
        let partclone = partclone_gzip_size("fat", &fs, dir.path());
        println!("{name}: reprov gzip {ours} B, partclone.fat | gzip -1 {partclone} B");
        assert!(
            ours as f64 <= partclone as f64 * 1.10,
            "{name}: reprov {ours} B is more than 10 % over partclone | gzip -1 {partclone} B"
        );

        let target = apply_onto_random(&img, dir.path(), size);
        run("fsck.vfat", &["-n", s(&target)]);
        assert_used_blocks_only(name, &fs, &target);
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        run(
            "mcopy",
            &["-i", s(&target), "-s", "::/etc", "::/keep.bin", s(&out)],
        );
        assert_eq!(
            files_under(&out),
            files_under(&content),
            "{name}: the files read back differ"
        );
    }
}

/// A file system reprov does not know (here: none at all) is imaged whole, and a sparse
/// source's holes are not read but come back as zeros.
#[test]
fn unknown_contents_are_imaged_whole_skipping_holes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    let mut file = std::fs::File::create(&src).unwrap();
    file.set_len(64 * MIB).unwrap();
    image_support::write_at(
        &mut file,
        10 * MIB + 5,
        &Rng::new(3).bytes(3 * MIB as usize),
    );
    drop(file);
    let (img, _) = image(&src, dir.path(), "zstd");
    let info: serde_json::Value =
        serde_json::from_str(&reprov(&["image", "info", "--json", s(&img)])).unwrap();
    assert_eq!(info["capture"], "all-blocks");
    assert_eq!(info["filesystem"], "unknown");
    assert_eq!(info["partition_type"], serde_json::Value::Null);
    assert_eq!(info["free_chunks"], 0);
    assert_eq!(info["data_chunks"], 2, "{info}");
    let target = apply_onto_random(&img, dir.path(), 64 * MIB);
    image_support::assert_same_prefix(&src, &target, 64 * MIB);
}
