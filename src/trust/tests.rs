use super::*;

fn keys_of(pairs: &[&KeyPair]) -> Keys {
    let mut keys = Keys::none();
    for pair in pairs {
        keys.add(&pair.public).unwrap();
    }
    keys
}

#[test]
fn a_signature_is_checked_against_the_trusted_keys() {
    let (ours, theirs) = (generate(None).unwrap(), generate(None).unwrap());
    let data = b"format = \"reprov-image\"\n";
    let signature = sign(&ours.secret, None, data, "timestamp:1\timage:web").unwrap();
    let decoded = Signature::decode(&signature).unwrap();
    assert_eq!(decoded.signer().key_id, ours.key_id);
    assert_eq!(decoded.signer().comment, "timestamp:1\timage:web");

    let trusted = keys_of(&[&theirs, &ours]);
    assert_eq!(
        trusted
            .check_signed(Signed::Image, data, Some(&signature))
            .unwrap(),
        Verdict::Trusted(decoded.signer().clone())
    );
    // Nothing configured: nothing checked, whatever the signature.
    assert_eq!(
        Keys::none()
            .check_signed(Signed::Image, b"x", None)
            .unwrap(),
        Verdict::NotChecked
    );

    let refused = |keys: &Keys, data: &[u8], signature: Option<&str>| {
        keys.check_signed(Signed::Image, data, signature)
            .unwrap_err()
            .to_string()
    };
    let err = refused(&trusted, data, None);
    assert!(err.contains("not signed"), "{err}");
    let err = refused(&keys_of(&[&theirs]), data, Some(&signature));
    assert!(
        err.contains(&format!("signed by key {}", ours.key_id)) && err.contains(&theirs.key_id),
        "{err}"
    );
    let err = refused(&trusted, b"format = \"reprov-image\"\n ", Some(&signature));
    assert!(err.contains("does not match its manifest"), "{err}");
    let truncated = &signature[..signature.len() - 20];
    let err = refused(&trusted, data, Some(truncated));
    assert!(err.contains("not a minisign signature"), "{err}");
    // A trusted comment changed after signing breaks the global signature.
    let forged = signature.replace("image:web", "image:db");
    let err = refused(&trusted, data, Some(&forged));
    assert!(err.contains("does not match"), "{err}");
}

#[test]
fn an_encrypted_key_needs_its_password() {
    let pair = generate(Some("hunter2".into())).unwrap();
    assert!(!pair
        .secret
        .contains(&pair.public.lines().nth(1).unwrap()[..20]));
    let err = sign(&pair.secret, None, b"m", "c").unwrap_err().to_string();
    assert!(err.contains("--password-file"), "{err}");
    let err = sign(&pair.secret, Some("wrong".into()), b"m", "c").unwrap_err();
    assert!(err.to_string().contains("Wrong password"), "{err}");
    let signature = sign(&pair.secret, Some("hunter2".into()), b"m", "c").unwrap();
    let keys = keys_of(&[&pair]);
    assert!(matches!(
        keys.check_signed(Signed::Image, b"m", Some(&signature)),
        Ok(Verdict::Trusted(_))
    ));
}

#[test]
fn key_files_that_do_not_hold_a_key_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(Keys::load_dir(&dir.path().join("none")).unwrap().is_empty());
    let pair = generate(None).unwrap();
    std::fs::write(dir.path().join("a.pub"), &pair.public).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not a key").unwrap();
    let keys = Keys::load_dir(dir.path()).unwrap();
    assert_eq!(keys.ids(), std::slice::from_ref(&pair.key_id));
    assert!(keys.describe().contains(&pair.key_id));
    assert!(Keys::none().describe().contains("NOT checked"));
    std::fs::write(
        dir.path().join("b.pub"),
        "untrusted comment: x\nRWQgarbage\n",
    )
    .unwrap();
    let err = Keys::load_dir(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("b.pub") && err.contains("not a minisign public key"),
        "{err}"
    );
}
