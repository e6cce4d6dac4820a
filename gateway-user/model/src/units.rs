//! Units written in policies and on the command line: durations and sizes. One parser each, so
//! that the same text means the same thing in every policy field and every flag.
use std::time::Duration;

/// Longest duration text accepted: four parts of five digits and a unit (`99999h99999m...`).
const MAX_DURATION_TEXT: usize = 4 * 7;

/// A duration in the Gateway API's format (GEP-2257): one to four parts, each 1-5 digits and a
/// unit (`h`, `m`, `s`, `ms`), units in decreasing order and each at most once: `1h`, `1m30s`,
/// `500ms`, `0s`. No spaces, no sign, no fractions. Every policy duration and every duration
/// flag is read by this function; a field that must not be zero says so itself
/// ([`parse_nonzero_duration`]).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "\"{}\" is not a duration like 10s, 500ms or 1m30s (units h, m, s, ms)",
            s.escape_debug()
        )
    };
    if s.len() > MAX_DURATION_TEXT {
        return Err(bad());
    }
    let mut rest = s;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    let mut last_rank = 0u8;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, rank, len) = if rest.starts_with("ms") {
            (Duration::from_millis(n), 4, 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(n * 3600), 1, 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(n * 60), 2, 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(n), 3, 1)
        } else {
            return Err(bad());
        };
        if rank <= last_rank {
            return Err(bad());
        }
        last_rank = rank;
        rest = &rest[len..];
        total += unit;
        parts += 1;
    }
    if parts == 0 || parts > 4 {
        return Err(bad());
    }
    Ok(total)
}

/// As [`parse_duration`], refusing zero (`0s`, `0ms`).
pub fn parse_nonzero_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("\"{s}\": a duration must be more than zero"));
    }
    Ok(d)
}

/// Writes a duration back in the format [`parse_duration`] reads (`1m30s`, `500ms`, `0s`),
/// for messages and for `explain`.
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("h", 3_600_000u128), ("m", 60_000), ("s", 1_000), ("ms", 1)] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

/// A size in bytes: a whole number with an optional unit, `B`, `KiB`/`MiB`/`GiB` (powers of
/// 1024; `K`/`M`/`G` too, as git writes them) or `KB`/`MB`/`GB` (powers of 1000); case does not
/// matter, a space may separate number and unit. `64MiB`, `512m`, `1GB`, `1000`. Zero is
/// refused: every size in a policy or a flag is a limit, and a limit of nothing is a mistake.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let text = s.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().map_err(|_| {
        format!(
            "\"{}\" is not a size like 64MiB, 512m, 1GB or 1048576",
            s.escape_debug()
        )
    })?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => {
            return Err(format!(
                "\"{}\": unknown unit \"{}\" (use B, KiB, MiB, GiB, KB, MB or GB)",
                s.escape_debug(),
                unit.trim().escape_debug()
            ))
        }
    };
    let bytes = n
        .checked_mul(multiplier)
        .ok_or_else(|| format!("\"{}\" is too large", s.escape_debug()))?;
    if bytes == 0 {
        return Err("a size must be more than zero".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_in_the_gateway_api_format() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1m1s1ms"), Ok(Duration::from_millis(61_001)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in [
            "",
            "10",
            "30",
            "1.5s",
            "-1s",
            "1s1m",
            "1s1s",
            "123456s",
            "1d",
            "1 s",
            " 1s",
            "1s ",
            "1h1m1s1ms1ms",
            "s",
            "ms",
            "+1s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zero_is_refused_only_where_asked() {
        assert_eq!(parse_nonzero_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_nonzero_duration("0s")
            .unwrap_err()
            .contains("more than zero"));
        assert!(parse_nonzero_duration("0ms").is_err());
    }

    #[test]
    fn a_formatted_duration_reads_back_as_itself() {
        for ms in [
            0u64, 1, 999, 1000, 1500, 60_000, 90_000, 3_600_000, 5_400_500,
        ] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_duration(d)), Ok(d), "{ms} ms");
        }
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1 GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("2k").unwrap(), 2048);
        assert_eq!(parse_size("1GB").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("10kb").unwrap(), 10_000);
        assert_eq!(parse_size("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_size("100B").unwrap(), 100);
        assert!(parse_size("0").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("1.5GiB").is_err());
        assert!(parse_size("3TiB").unwrap_err().contains("unknown unit"));
        assert!(parse_size("99999999999999GiB")
            .unwrap_err()
            .contains("too large"));
    }
}
