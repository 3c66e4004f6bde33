//! Serde helpers so a detector's state can be checkpointed and resumed: fixed arrays longer than
//! serde's built-in 32 elements, and floats that may be infinite (JSON has no infinity).

/// `[T; N]` as a sequence of exactly `N` items.
pub(crate) mod array {
    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize, const N: usize>(
        a: &[T; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(a.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>, const N: usize>(
        d: D,
    ) -> Result<[T; N], D::Error> {
        let v: Vec<T> = Vec::deserialize(d)?;
        let len = v.len();
        v.try_into()
            .map_err(|_| D::Error::invalid_length(len, &"the state's fixed number of items"))
    }
}

/// An `f64` that may be ±infinity or NaN: written as the strings `inf`, `-inf`, `nan` then.
pub(crate) mod float {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("nan")
        } else if *v > 0.0 {
            s.serialize_str("inf")
        } else {
            s.serialize_str("-inf")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Number(v) => Ok(v),
            Repr::Text(t) => match t.as_str() {
                "inf" => Ok(f64::INFINITY),
                "-inf" => Ok(f64::NEG_INFINITY),
                _ => Ok(f64::NAN),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::{Detector, SeasonalDetector};

    /// A checkpointed detector resumes where the original is.
    #[test]
    fn a_detector_resumes_from_its_checkpoint() {
        let value =
            |i: i64| 10.0 + (i as f64 * 0.05).sin() * 3.0 + if i == 1500 { 40.0 } else { 0.0 };
        let mut original = SeasonalDetector::default();
        for i in 0..1000 {
            original.observe(i * 60_000, value(i));
        }
        let text = serde_json::to_string(&original).expect("serializes");
        let mut resumed: SeasonalDetector = serde_json::from_str(&text).expect("deserializes");
        for i in 1000..2000 {
            let a = original.observe(i * 60_000, value(i));
            let b = resumed.observe(i * 60_000, value(i));
            // JSON may round the last bit of a float; nothing more.
            assert!(
                (a.score - b.score).abs() < 1e-9,
                "point {i}: {a:?} vs {b:?}"
            );
            assert!((a.expected - b.expected).abs() < 1e-6 * (1.0 + a.expected.abs()));
        }
    }

    #[test]
    fn a_fresh_detector_with_infinite_bounds_round_trips() {
        let d = SeasonalDetector::default();
        let text = serde_json::to_string(&d).expect("serializes");
        let back: SeasonalDetector = serde_json::from_str(&text).expect("deserializes");
        assert_eq!(serde_json::to_string(&back).expect("serializes"), text);
    }
}
