//! Durations and byte sizes as policy files write them.
//!
//! * Durations: an integer (seconds) or a string `<n><unit>` with unit `ms`,
//!   `s`, `m` or `h` (`"500ms"`, `"30s"`, `"5m"`, `"1h"`); a bare number in a
//!   string is seconds.
//! * Sizes: an integer (bytes) or a string `<n><unit>` with unit `B`, `K`,
//!   `M`, `G`, `T`, each optionally followed by `iB` (`"16M"`, `"1GiB"`);
//!   units are powers of 1024. A bare number in a string is bytes.
//!
//! Whitespace between number and unit is not accepted; overflow is an error.

use std::time::Duration;

use serde::Deserialize;

/// A duration or size field before parsing: TOML integer or string.
#[derive(Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(untagged)]
pub enum Quantity {
    Int(u64),
    Text(String),
}

/// Splits `"16M"` into `(16, "M")`.
fn split(text: &str) -> Result<(u64, &str), String> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(format!("{text:?} does not start with a number"));
    }
    let (num, unit) = text.split_at(digits);
    let n = num
        .parse::<u64>()
        .map_err(|_| format!("{text:?} is too large"))?;
    Ok((n, unit))
}

/// Parses a duration (see the module documentation).
pub fn parse_duration(q: &Quantity) -> Result<Duration, String> {
    let text = match q {
        Quantity::Int(n) => return Ok(Duration::from_secs(*n)),
        Quantity::Text(t) => t.as_str(),
    };
    let (n, unit) = split(text)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "{text:?} has an unknown duration unit (use ms, s, m or h)"
            ))
        }
    };
    n.checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a byte size (see the module documentation).
pub fn parse_size(q: &Quantity) -> Result<u64, String> {
    let text = match q {
        Quantity::Int(n) => return Ok(*n),
        Quantity::Text(t) => t.as_str(),
    };
    let (n, unit) = split(text)?;
    let shift = match unit {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => {
            return Err(format!(
                "{text:?} has an unknown size unit (use B, K, M, G or T)"
            ))
        }
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Formats a size for humans: the largest binary unit that divides it.
pub fn show_size(n: u64) -> String {
    for (shift, unit) in [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")] {
        if n != 0 && n.is_multiple_of(1u64 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

/// Formats a duration for humans (`"90s"`, `"1500ms"`).
pub fn show_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Quantity {
        Quantity::Text(s.into())
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration(&Quantity::Int(7)),
            Ok(Duration::from_secs(7))
        );
        assert_eq!(parse_duration(&t("30s")), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration(&t("45")), Ok(Duration::from_secs(45)));
        assert_eq!(parse_duration(&t("5m")), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration(&t("2h")), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration(&t("250ms")), Ok(Duration::from_millis(250)));
        for bad in ["", "s", "5 m", "5d", "-1s", "1.5s", "99999999999999999999s"] {
            assert!(parse_duration(&t(bad)).is_err(), "{bad:?} accepted");
        }
        assert!(parse_duration(&t("18446744073709551615h")).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(&Quantity::Int(4096)), Ok(4096));
        assert_eq!(parse_size(&t("512")), Ok(512));
        assert_eq!(parse_size(&t("16M")), Ok(16 << 20));
        assert_eq!(parse_size(&t("1G")), Ok(1 << 30));
        assert_eq!(parse_size(&t("1GiB")), Ok(1 << 30));
        assert_eq!(parse_size(&t("3K")), Ok(3072));
        assert_eq!(parse_size(&t("2T")), Ok(2 << 40));
        for bad in ["", "M", "16 M", "16m", "16MB", "1.5G", "-1", "20000000T"] {
            assert!(parse_size(&t(bad)).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn shows() {
        assert_eq!(show_size(16 << 20), "16 MiB");
        assert_eq!(show_size(1 << 30), "1 GiB");
        assert_eq!(show_size(1000), "1000 bytes");
        assert_eq!(show_duration(Duration::from_secs(60)), "60s");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
    }
}
