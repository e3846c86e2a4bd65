//! Sizes written for people: `"50GiB"`, `"500 MB"`, or a plain number of
//! bytes, in the config file, the environment and the CLI; and the one way
//! Berth prints a size (`49.8 GiB`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes. In TOML either an integer or a string with a unit
/// (`KiB`, `MiB`, `GiB`, `TiB` are powers of 1024; `KB`, `MB`, `GB`, `TB`
/// powers of 1000). Serialized as a string: the form [`human`] prints where
/// that is exact, else the number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(Size(0));
        }
        if let Ok(n) = text.parse::<u64>() {
            return Ok(Size(n));
        }
        text.parse::<bytesize::ByteSize>()
            .map(|b| Size(b.as_u64()))
            .map_err(|_| format!("{text:?} is not a size (examples: 50GiB, 500MB, 1048576)"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human(self.0))
    }
}

impl Serialize for Size {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.exact_text())
    }
}

impl Size {
    /// Always a string (so a `BERTH_*` variable may carry a unit too): the
    /// unit form, or the plain number where the unit form would round.
    fn exact_text(self) -> String {
        let text = human(self.0);
        if self.0 >= 1024 && text.parse::<Size>() == Ok(self) { text } else { self.0.to_string() }
    }
}

/// A plain number of bytes, or a string to parse (with a unit).
fn number_or_text<'de, D: Deserializer<'de>, T: FromStr<Err = String>>(
    deserializer: D,
    from_number: fn(u64) -> T,
) -> Result<T, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Number(n) => Ok(from_number(n)),
        Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
    }
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        number_or_text(deserializer, Size)
    }
}

/// Bytes per second: a [`Size`] with an optional `/s` (`"100MB/s"`,
/// `"50MiB"`); 0 means no limit. Serialized with the `/s`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rate(pub Size);

impl Rate {
    /// Bytes per second, `None` for no limit.
    pub fn per_second(self) -> Option<u64> {
        Some(self.0.bytes()).filter(|b| *b > 0)
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let size = text.strip_suffix("/s").unwrap_or(text);
        size.parse::<Size>()
            .map(Rate)
            .map_err(|_| format!("{text:?} is not a rate (examples: 100MB/s, 50MiB/s, 0 for no limit)"))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.per_second() {
            None => f.write_str("unlimited"),
            Some(b) => write!(f, "{}/s", human(b)),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.per_second() {
            None => serializer.serialize_str("0"),
            Some(_) => serializer.serialize_str(&format!("{}/s", self.0.exact_text())),
        }
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        number_or_text(deserializer, |n| Rate(Size(n)))
    }
}

/// `512 B`, `1.5 KiB`, `49.8 GiB`, `50 GiB`: one decimal, dropped when it is 0.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    let text = format!("{value:.1}");
    let text = text.strip_suffix(".0").unwrap_or(&text);
    format!("{text} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_plain_numbers() {
        assert_eq!("50GiB".parse(), Ok(Size(50 << 30)));
        assert_eq!("50 GiB".parse(), Ok(Size(50 << 30)));
        assert_eq!("500MB".parse(), Ok(Size(500_000_000)));
        assert_eq!("1048576".parse(), Ok(Size(1 << 20)));
        assert_eq!("".parse(), Ok(Size(0)));
        assert!("lots".parse::<Size>().is_err());
        assert!("-5GiB".parse::<Size>().is_err());
    }

    #[test]
    fn prints_one_decimal_without_a_trailing_zero() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(50 << 30), "50 GiB");
        assert_eq!(human((49.8 * (1u64 << 30) as f64) as u64), "49.8 GiB");
    }

    #[test]
    fn rates_take_an_optional_per_second() {
        assert_eq!("100MB/s".parse(), Ok(Rate(Size(100_000_000))));
        assert_eq!("50MiB".parse(), Ok(Rate(Size(50 << 20))));
        assert_eq!("0".parse::<Rate>().map(Rate::per_second), Ok(None));
        assert!("fast".parse::<Rate>().is_err());
        for r in ["100MB/s", "0", "1048576/s"] {
            let rate: Rate = r.parse().expect("parse");
            let json = serde_json::to_string(&rate).expect("serialize");
            assert_eq!(serde_json::from_str::<Rate>(&json).expect("back"), rate, "{json}");
        }
    }

    #[test]
    fn serializes_to_what_it_parses() {
        for n in [0, 1000, 1 << 20, 50 << 30, 1_234_567] {
            let toml = serde_json::to_string(&Size(n)).expect("serialize");
            let back: Size = serde_json::from_str(&toml).expect("parse back");
            assert_eq!(back, Size(n), "{toml}");
        }
    }
}
