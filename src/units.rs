//! Sizes with units, as operators type them (`64M`, `1G`, `512K`, `4096`): binary units.

/// Parses a size such as `64M`, `1G`, `1.5G` or `4096` (bytes) into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        other => {
            return Err(format!(
            "size {text:?}: unknown unit {other:?} (use K, M, G or T, binary: 1M = 1048576 bytes)"
        ))
        }
    };
    let bad =
        || format!("size {text:?}: expected a number with an optional unit, like 64M or 1.5G");
    let bytes = if let Some((whole, frac)) = number.split_once('.') {
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        if frac.is_empty() || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let frac_value: u64 = frac.parse().map_err(|_| bad())?;
        let scale = 10u64.pow(u32::try_from(frac.len()).map_err(|_| bad())?);
        let unit = 1u64 << shift;
        whole
            .checked_mul(unit)
            .and_then(|w| {
                frac_value
                    .checked_mul(unit)
                    .map(|f| w.checked_add(f / scale))
            })
            .flatten()
    } else {
        number
            .parse::<u64>()
            .map_err(|_| bad())?
            .checked_mul(1u64 << shift)
    };
    bytes.ok_or_else(|| format!("size {text:?}: too large"))
}

/// Formats bytes for people: `64.0 MiB`, `1.5 GiB`, `512 B`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sizes_as_operators_type_them() {
        for (text, bytes) in [
            ("4096", 4096),
            ("512K", 512 << 10),
            ("64M", 64 << 20),
            ("64MiB", 64 << 20),
            ("1G", 1 << 30),
            ("1.5G", 3 << 29),
            ("2T", 2 << 40),
            (" 8m ", 8 << 20),
        ] {
            assert_eq!(parse_size(text), Ok(bytes), "{text}");
        }
    }

    #[test]
    fn refuses_sizes_that_are_not_sizes() {
        for text in ["", "M", "12X", "1.G", "-1M", "1..5G", "99999999999T"] {
            assert!(parse_size(text).is_err(), "{text} should be refused");
        }
    }

    #[test]
    fn formats_sizes_for_people() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(64 << 20), "64.0 MiB");
        assert_eq!(format_size(3 << 29), "1.5 GiB");
    }
}
