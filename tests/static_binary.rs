//! The recovery initramfs has no dynamic loader: reprov must be one static binary.

use std::process::Command;

fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn build_static_makes_a_statically_linked_executable() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-static");
    let built = Command::new(script)
        .output()
        .expect("running scripts/build-static");
    assert!(
        built.status.success(),
        "scripts/build-static failed: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    let path = String::from_utf8(built.stdout).expect("path is UTF-8");
    let path = path.trim();

    let file = output("file", &["-b", path]);
    assert!(file.contains("statically linked"), "file says: {file}");
    let ldd = output("ldd", &[path]);
    assert!(ldd.contains("not a dynamic executable"), "ldd says: {ldd}");
    let version = output(path, &["version"]);
    assert!(
        version.starts_with("reprov "),
        "reprov version says: {version}"
    );
}
