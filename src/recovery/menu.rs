//! The recovery console's menu and input rules (pure): what each choice is, and how a
//! typed line becomes a choice or an answer the console can explain.

/// Longest line the console reads; the rest of a longer line is dropped.
pub const MAX_LINE: usize = 256;

/// A choice of the main menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Status,
    ListImages,
    Apply,
    Create,
    Factory,
    ShowLog,
    BootNos,
    Reboot,
    PowerOff,
    Verify,
    EditIdentity,
}

/// The menu, in the order shown (numbered from 1).
pub const MENU: &[(Choice, &str)] = &[
    (
        Choice::Status,
        "status (layout, job, last log entries, saved identity)",
    ),
    (Choice::ListImages, "list images"),
    (Choice::Apply, "apply an image onto NOS"),
    (Choice::Create, "create an image of NOS"),
    (Choice::Factory, "restore the factory image"),
    (Choice::ShowLog, "show the log"),
    (
        Choice::BootNos,
        "boot NOS (hide the system partition, make NOS active)",
    ),
    (Choice::Reboot, "reboot"),
    (Choice::PowerOff, "power off"),
    (Choice::Verify, "verify an image"),
    (
        Choice::EditIdentity,
        "edit the saved identity (hostname, address)",
    ),
];

/// The menu as printed.
pub fn render() -> String {
    let mut out = String::from("\nreprov recovery console\n");
    for (i, (_, label)) in MENU.iter().enumerate() {
        out.push_str(&format!("  {}) {label}\n", i + 1));
    }
    out
}

/// A typed line, checked: trimmed text, or why it is refused.
pub fn clean(line: &[u8], truncated: bool) -> Result<String, String> {
    if truncated {
        return Err(format!("that line is longer than {MAX_LINE} characters"));
    }
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches(['\n', '\r']).trim();
    if text.chars().any(char::is_control) {
        return Err("that line holds control characters".into());
    }
    if text.is_empty() {
        return Err("nothing typed".into());
    }
    Ok(text.to_string())
}

/// A number from 1 to `count`, as the index from 0.
pub fn pick(text: &str, count: usize) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=count).contains(&n) => Ok(n - 1),
        _ => Err(format!("{text:?} is not a number from 1 to {count}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_checked() {
        let cases: [(&[u8], bool, Result<&str, &str>); 6] = [
            (b" 3 \r\n", false, Ok("3")),
            (b"\n", false, Err("nothing typed")),
            (b"   \n", false, Err("nothing typed")),
            (b"1\x1b[A\n", false, Err("control characters")),
            (b"xxxx", true, Err("longer than")),
            (b"yes\n", false, Ok("yes")),
        ];
        for (line, truncated, expected) in cases {
            match (clean(line, truncated), expected) {
                (Ok(text), Ok(want)) => assert_eq!(text, want),
                (Err(why), Err(want)) => assert!(why.contains(want), "{why}"),
                (got, want) => panic!("{line:?}: {got:?}, expected {want:?}"),
            }
        }
    }

    #[test]
    fn picks_only_numbers_in_range() {
        assert_eq!(pick("1", 3), Ok(0));
        assert_eq!(pick("3", 3), Ok(2));
        assert_eq!(pick("11", 11), Ok(10));
        for bad in ["0", "4", "-1", "x", "99999999999999999999999"] {
            assert!(pick(bad, 3).is_err(), "{bad}");
        }
    }
}
