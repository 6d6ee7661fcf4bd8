//! Whole numbers as JSON Schema counts them: `314.0` is the integer 314.
//! A client (or a schema-driven fuzzer) may send an integer field written
//! with a zero fraction; serde's integer types refuse it. Used with
//! `#[serde(deserialize_with = ...)]` on integer fields of request bodies.

use serde::de::Error;
use serde::{Deserialize, Deserializer};

/// An integer, also when written as a float with no fraction.
pub fn integer<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = match (number.as_i64(), number.as_f64()) {
        (Some(n), _) => n,
        (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e18 => f as i64,
        _ => {
            return Err(D::Error::custom(format!(
                "expected a whole number, got {number}"
            )))
        }
    };
    T::try_from(whole).map_err(|_| D::Error::custom(format!("{whole} is out of range")))
}

/// [`integer`] for an optional field (use with `#[serde(default)]`).
pub fn optional_integer<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i64>,
{
    match Option::<serde_json::Number>::deserialize(deserializer)? {
        None => Ok(None),
        Some(number) => integer(serde_json::Value::Number(number))
            .map(Some)
            .map_err(D::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    #[derive(serde::Deserialize)]
    struct Counts {
        #[serde(deserialize_with = "super::integer")]
        n: u32,
        #[serde(default, deserialize_with = "super::optional_integer")]
        m: Option<i32>,
    }

    #[test]
    fn whole_floats_are_integers_and_fractions_are_not() {
        let counts: Counts = serde_json::from_str(r#"{"n": 314.0, "m": -2.0}"#).unwrap();
        assert_eq!((counts.n, counts.m), (314, Some(-2)));
        let counts: Counts = serde_json::from_str(r#"{"n": 3}"#).unwrap();
        assert_eq!((counts.n, counts.m), (3, None));
        assert!(serde_json::from_str::<Counts>(r#"{"n": 3.5}"#).is_err());
        assert!(serde_json::from_str::<Counts>(r#"{"n": -1}"#).is_err());
        assert!(serde_json::from_str::<Counts>(r#"{"n": 1e30}"#).is_err());
    }
}
