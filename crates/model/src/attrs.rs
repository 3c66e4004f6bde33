use base64::Engine;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};

/// Attributes in the order they were received. Keys are unique after [`crate::otlp`] conversion.
pub type Attrs = Vec<(String, String)>;

/// Renders an OTLP value the way the ClickHouse exporter's `AsString` does.
pub fn any_value_to_string(v: &AnyValue) -> String {
    match &v.value {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => format_double(*d),
        Some(Value::BytesValue(b)) => base64::engine::general_purpose::STANDARD.encode(b),
        Some(_) => to_json(v).to_string(),
    }
}

pub(crate) fn format_double(d: f64) -> String {
    if d.is_finite() {
        // `{}` prints the shortest text that round-trips, without exponent noise for common values.
        format!("{d}")
    } else if d.is_nan() {
        "NaN".into()
    } else if d > 0.0 {
        "+Inf".into()
    } else {
        "-Inf".into()
    }
}

fn to_json(v: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.value {
        None => J::Null,
        Some(Value::StringValue(s)) => J::String(s.clone()),
        Some(Value::BoolValue(b)) => J::Bool(*b),
        Some(Value::IntValue(i)) => J::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(J::Number)
            .unwrap_or_else(|| J::String(format_double(*d))),
        Some(Value::BytesValue(b)) => {
            J::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
        Some(Value::ArrayValue(a)) => J::Array(a.values.iter().map(to_json).collect()),
        Some(Value::KvlistValue(kv)) => J::Object(
            kv.values
                .iter()
                .map(|k| {
                    (
                        k.key.clone(),
                        k.value.as_ref().map(to_json).unwrap_or(J::Null),
                    )
                })
                .collect(),
        ),
        // String-table references only occur in profiles, which carry their own tables.
        #[allow(unreachable_patterns)]
        Some(_) => J::Null,
    }
}

/// Converts OTLP key-values, moving their strings; a repeated key keeps its last value (the OTLP
/// spec leaves duplicates undefined and a map column cannot hold them).
pub fn attrs_from_otlp(kvs: Vec<KeyValue>) -> Attrs {
    let mut out: Attrs = Vec::with_capacity(kvs.len());
    for kv in kvs {
        let v = any_value_into_string(kv.value);
        if let Some(slot) = out.iter_mut().find(|(k, _)| *k == kv.key) {
            slot.1 = v;
        } else {
            out.push((kv.key, v));
        }
    }
    out
}

/// [`any_value_to_string`] for an owned value: a string value is moved, not copied.
pub fn any_value_into_string(v: Option<AnyValue>) -> String {
    match v {
        None => String::new(),
        Some(AnyValue {
            value: Some(Value::StringValue(s)),
        }) => s,
        Some(v) => any_value_to_string(&v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::ArrayValue;

    fn v(x: Value) -> AnyValue {
        AnyValue { value: Some(x) }
    }

    #[test]
    fn renders_each_kind_as_text() {
        assert_eq!(any_value_to_string(&v(Value::IntValue(-7))), "-7");
        assert_eq!(any_value_to_string(&v(Value::DoubleValue(2.5))), "2.5");
        assert_eq!(any_value_to_string(&v(Value::BoolValue(true))), "true");
        let arr = v(Value::ArrayValue(ArrayValue {
            values: vec![v(Value::StringValue("a".into())), v(Value::IntValue(1))],
        }));
        assert_eq!(any_value_to_string(&arr), r#"["a",1]"#);
    }

    #[test]
    fn duplicate_keys_keep_the_last_value() {
        let kv = |k: &str, s: &str| KeyValue {
            key: k.into(),
            value: Some(v(Value::StringValue(s.into()))),
            ..Default::default()
        };
        let a = attrs_from_otlp(vec![kv("a", "1"), kv("b", "2"), kv("a", "3")]);
        assert_eq!(a, vec![("a".into(), "3".into()), ("b".into(), "2".into())]);
    }
}
