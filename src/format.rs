//! Parsing and printing of the quantities people type and read: sizes (`10GiB`), durations
//! (`1h30m`), free-space targets (`15%` or a size), and human-readable sizes for tables.

use std::time::Duration;

/// Parses a byte size: a number with an optional unit, SI (`kB`, `MB`, `GB`, `TB`, `PB`) or IEC
/// (`KiB`, `MiB`, `GiB`, `TiB`, `PiB`); single letters (`K`, `M`, `G`, `T`, `P`) are IEC, as `df`
/// reads them. Every size [`human_bytes`] prints parses back.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let not_a_size = || format!("{s:?} is not a size (examples: 500MB, 10GiB, 1073741824)");
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    // Exact integer arithmetic (no f64, which loses bytes above 2^53): at most 38 significant
    // digits fit u128; more fractional digits than that cannot change a byte count of u64.
    if (whole.is_empty() && frac.is_empty()) || frac.contains('.') || whole.len() > 20 {
        return Err(not_a_size());
    }
    let frac = &frac[..frac.len().min(18)];
    let mult: u128 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "pb" => 1_000_000_000_000_000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "p" | "pib" => 1 << 50,
        other => {
            return Err(format!(
                "{s:?} has an unknown unit {other:?} (use B, kB, MB, GB, TB, PB, KiB, MiB, GiB, TiB or PiB)"
            ));
        }
    };
    let digits = |d: &str| -> Result<u128, String> {
        if d.is_empty() {
            Ok(0)
        } else {
            d.parse::<u128>().map_err(|_| not_a_size())
        }
    };
    let scale = 10u128.pow(frac.len() as u32);
    // whole < 10^20, mult ≤ 2^50: the product fits u128; the fraction is < scale ≤ 10^18.
    let exact = digits(whole)? * mult;
    let part = digits(frac)? * mult;
    // Round half up, as the f64 version did.
    let bytes = exact + (part + scale / 2) / scale;
    u64::try_from(bytes).map_err(|_| format!("{s:?} is out of range"))
}

/// Parses a duration such as `30s`, `5m`, `1h30m`, `7d`, `1w` or `250ms` (Prometheus' style).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let bad = || format!("{s:?} is not a duration (examples: 30s, 5m, 1h30m, 7d)");
    if t.is_empty() {
        return Err(bad());
    }
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let piece = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            "d" => Duration::from_secs(n.saturating_mul(86_400)),
            "w" => Duration::from_secs(n.saturating_mul(604_800)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(piece);
    }
    Ok(total)
}

/// Prints a duration the way [`parse_duration`] reads it (`1h30m`, `45s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms % 1000 != 0 && ms < 60_000 {
        return format!("{ms}ms");
    }
    let mut secs = d.as_secs();
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if secs >= len {
            out.push_str(&format!("{}{unit}", secs / len));
            secs %= len;
        }
    }
    out
}

/// A free-space target on a filesystem: a share of its size or an absolute amount.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FreeTarget {
    /// Percent of the filesystem's size, 0 to 100.
    Percent(f64),
    /// Bytes available.
    Bytes(u64),
}

impl FreeTarget {
    /// Bytes that must be available on a filesystem of `size` bytes to meet the target.
    pub fn bytes_for(self, size: u64) -> u64 {
        match self {
            FreeTarget::Percent(p) => ((size as f64) * p / 100.0).ceil() as u64,
            FreeTarget::Bytes(b) => b,
        }
    }

    /// Whether `avail` bytes available on a filesystem of `size` bytes meet the target.
    pub fn met_by(self, avail: u64, size: u64) -> bool {
        avail >= self.bytes_for(size)
    }
}

impl std::fmt::Display for FreeTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FreeTarget::Percent(p) => write!(f, "{p}%"),
            FreeTarget::Bytes(b) => f.write_str(&human_bytes(*b)),
        }
    }
}

/// Parses `15%` or a size (`10GiB`).
pub fn parse_free_target(s: &str) -> Result<FreeTarget, String> {
    let t = s.trim();
    if let Some(p) = t.strip_suffix('%') {
        let v: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a percentage (example: 15%)"))?;
        if !(0.0..=100.0).contains(&v) {
            return Err(format!("{s:?} must be between 0% and 100%"));
        }
        return Ok(FreeTarget::Percent(v));
    }
    parse_size(t).map(FreeTarget::Bytes)
}

/// Parses a share of the time or of a whole, above `0%` up to `100%`, into (0, 1].
pub fn parse_share(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .strip_suffix('%')
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| format!("{s:?} is not a percentage (example: 2%)"))?;
    if !(v > 0.0 && v <= 100.0) {
        return Err(format!("{s:?} must be more than 0% and at most 100%"));
    }
    Ok(v / 100.0)
}

/// Prints bytes with an IEC unit and three significant digits: `1.23GiB`, `512B`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b}B")
    } else if v >= 100.0 {
        // At the top unit the rounding must stop short of 2^64 bytes (16384PiB), which no u64
        // holds and `parse_size` refuses.
        let v = if i == UNITS.len() - 1 {
            v.round().min(16383.0)
        } else {
            v
        };
        format!("{v:.0}{}", UNITS[i])
    } else if v >= 10.0 {
        format!("{v:.1}{}", UNITS[i])
    } else {
        format!("{v:.2}{}", UNITS[i])
    }
}

/// Lays out rows as an aligned text table; the first row is the header. Columns whose header
/// ends with a space-free right-alignment marker are not special: numbers are right-aligned when
/// every cell below the header starts with a digit.
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut width = vec![0usize; cols];
    let mut numeric = vec![true; cols];
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            width[c] = width[c].max(cell.chars().count());
            if r > 0 && !cell.chars().next().is_some_and(|ch| ch.is_ascii_digit()) && cell != "-" {
                numeric[c] = false;
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = width[c] - cell.chars().count();
            if c > 0 {
                line.push_str("  ");
            }
            if numeric[c] && rows.len() > 1 {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                if c + 1 < row.len() {
                    line.push_str(&" ".repeat(pad));
                }
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Escapes text for HTML (and SVG): its five special characters.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_accept_si_and_iec_units() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("1kB"), Ok(1000));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("10GiB"), Ok(10 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("2G"), Ok(2 * 1024 * 1024 * 1024));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10XB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("-1").is_err());
        // Exact above 2^53, where f64 loses bytes.
        assert_eq!(parse_size("9007199254740993"), Ok(9_007_199_254_740_993));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert!(
            parse_size("18446744073709551616")
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            parse_size("16777216TiB")
                .unwrap_err()
                .contains("out of range")
        );
        assert_eq!(
            parse_size("16777215.5TiB"),
            Ok(16_777_215 * (1 << 40) + (1 << 39))
        );
        assert_eq!(parse_size("0.0000000000000000001GB"), Ok(0));
        assert_eq!(parse_size(".5KiB"), Ok(512));
        assert_eq!(parse_size("1."), Ok(1));
        assert!(parse_size(".").is_err());
        assert!(parse_size("1.2.3").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("123456789012345678901").is_err());
    }

    /// Found by the `format` fuzz target: `human_bytes` printed `6989PiB`, which `parse_size`
    /// refused, so a size `bilge df` shows could not be given back to `--target-free`.
    #[test]
    fn a_size_printed_in_pib_parses_back() {
        let b: u64 = 7_869_029_018_856_748_849;
        assert_eq!(human_bytes(b), "6989PiB");
        let back = parse_size(&human_bytes(b)).unwrap_or_default();
        assert!(back.abs_diff(b) <= b / 200, "{back}");
        assert_eq!(parse_size("1PiB"), Ok(1 << 50));
        assert_eq!(parse_size("2P"), Ok(2 << 50));
        assert_eq!(parse_size("1PB"), Ok(1_000_000_000_000_000));
    }

    /// Found by the `format` fuzz target once sizes were parsed exactly: a size just under 2^64
    /// printed as `16384PiB` (2^64, rounded up), which `parse_size` refuses as out of range.
    #[test]
    fn the_largest_sizes_print_as_sizes_that_parse_back() {
        for b in [18_446_744_070_039_093_341, u64::MAX, u64::MAX - (1 << 49)] {
            let text = human_bytes(b);
            let back = parse_size(&text).unwrap_or_else(|e| panic!("{b} as {text}: {e}"));
            assert!(back.abs_diff(b) <= b / 200, "{b} as {text} reads {back}");
        }
        assert_eq!(human_bytes(u64::MAX), "16383PiB");
    }

    #[test]
    fn durations_read_like_prometheus() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "h", "10", "5x", "1.5h", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_print_back_the_way_they_parse() {
        for s in ["1h30m", "45s", "250ms", "1d", "0s"] {
            let d = parse_duration(s).unwrap_or_default();
            assert_eq!(format_duration(d), s);
        }
    }

    #[test]
    fn free_targets_are_percent_or_size() {
        assert_eq!(parse_free_target("15%"), Ok(FreeTarget::Percent(15.0)));
        assert_eq!(
            parse_free_target("1GiB"),
            Ok(FreeTarget::Bytes(1024 * 1024 * 1024))
        );
        assert!(parse_free_target("150%").is_err());
        assert_eq!(FreeTarget::Percent(10.0).bytes_for(1000), 100);
    }

    #[test]
    fn shares_are_percentages_above_zero_up_to_a_hundred() {
        assert_eq!(parse_share("2%"), Ok(0.02));
        assert_eq!(parse_share(" 100% "), Ok(1.0));
        assert_eq!(parse_share("0.5%"), Ok(0.005));
        for bad in ["0%", "-1%", "101%", "2", "%", "NaN%", "inf%", "two%", ""] {
            assert!(parse_share(bad).is_err(), "{bad:?} was taken");
        }
    }

    #[test]
    fn human_bytes_keeps_three_digits() {
        assert_eq!(human_bytes(512), "512B");
        assert_eq!(human_bytes(1536), "1.50KiB");
        assert_eq!(human_bytes(13 * 1024 * 1024 * 1024), "13.0GiB");
        assert_eq!(human_bytes(200 * 1024 * 1024), "200MiB");
    }

    #[test]
    fn tables_align_columns_and_right_align_numbers() {
        let t = table(&[
            vec!["TYPE".into(), "SIZE".into()],
            vec!["image".into(), "1.00GiB".into()],
            vec!["build_cache".into(), "13.0GiB".into()],
        ]);
        assert_eq!(
            t,
            "TYPE            SIZE\nimage        1.00GiB\nbuild_cache  13.0GiB\n"
        );
    }
}
