//! jCard (RFC 7095): vCard as JSON.
//!
//! A jCard is `["vcard", [[name, {params}, type, value…], …]]`. Text values are unescaped,
//! structured values are arrays, dates use the extended ISO 8601 form; reading converts back to
//! the canonical model, so that vCard → jCard → vCard gives the same contact. The one thing
//! jCard cannot carry is a vCard parameter named `GROUP` (the name is reserved for the property
//! group there); it is left out.

use serde_json::{Map, Value, json};

use crate::model::{
    Contact, Param, Property, ValueKind, canonical_value, canonicalize_params, date_to_basic,
    date_to_extended, default_value_type, escape_text, split_unescaped, unescape, value_kind,
};

/// Why a JSON document is not a jCard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JcardError {
    #[error("not valid JSON: {0}")]
    Json(String),
    #[error("not a jCard: {0}")]
    Shape(&'static str),
}

/// One contact as a jCard value.
pub fn to_jcard(contact: &Contact) -> Value {
    let mut props = Vec::with_capacity(contact.properties().len() + 1);
    props.push(json!(["version", {}, "text", "4.0"]));
    for p in contact.properties() {
        props.push(property_to_json(p));
    }
    json!(["vcard", props])
}

fn property_to_json(p: &Property) -> Value {
    let mut params = Map::new();
    if let Some(g) = &p.group {
        params.insert("group".into(), Value::String(g.clone()));
    }
    let mut value_type = default_value_type(&p.name).to_owned();
    for param in &p.params {
        // `group` is the property group in jCard; a vCard parameter of that name cannot be kept.
        if param.name == "GROUP" {
            continue;
        }
        if param.name == "VALUE" && param.values.len() == 1 {
            value_type = param.values[0].to_ascii_lowercase();
            continue;
        }
        let v = if param.values.len() == 1 {
            Value::String(param.values[0].clone())
        } else {
            Value::Array(param.values.iter().cloned().map(Value::String).collect())
        };
        params.insert(param.name.to_ascii_lowercase(), v);
    }
    let mut out = vec![
        Value::String(p.name.to_ascii_lowercase()),
        Value::Object(params),
        Value::String(value_type),
    ];
    match value_kind(&p.name, &p.params) {
        ValueKind::Text => out.push(Value::String(unescape(&p.value))),
        ValueKind::List => out.extend(
            split_unescaped(&p.value, ',')
                .into_iter()
                .map(|v| Value::String(unescape(v))),
        ),
        ValueKind::Compound { lists } => {
            let components: Vec<Value> = split_unescaped(&p.value, ';')
                .into_iter()
                .map(|c| {
                    let items = if lists {
                        split_unescaped(c, ',')
                    } else {
                        vec![c]
                    };
                    if items.len() == 1 {
                        Value::String(unescape(items[0]))
                    } else {
                        Value::Array(
                            items
                                .into_iter()
                                .map(|i| Value::String(unescape(i)))
                                .collect(),
                        )
                    }
                })
                .collect();
            if components.len() == 1 && !lists {
                out.extend(components);
            } else {
                out.push(Value::Array(components));
            }
        }
        ValueKind::Date => out.push(Value::String(
            date_to_extended(&p.value).unwrap_or_else(|| p.value.clone()),
        )),
        ValueKind::Raw => out.push(Value::String(p.value.clone())),
    }
    Value::Array(out)
}

/// Parses a jCard, or an array of jCards.
pub fn from_jcard_str(text: &str) -> Result<Vec<Contact>, JcardError> {
    let value: Value = serde_json::from_str(text).map_err(|e| JcardError::Json(e.to_string()))?;
    match &value {
        Value::Array(items) if items.first() == Some(&Value::String("vcard".into())) => {
            Ok(vec![from_jcard(&value)?])
        }
        Value::Array(items) => items.iter().map(from_jcard).collect(),
        _ => Err(JcardError::Shape("expected an array")),
    }
}

/// One contact from one jCard value.
pub fn from_jcard(value: &Value) -> Result<Contact, JcardError> {
    let Some([tag, Value::Array(props)]) = value.as_array().map(Vec::as_slice) else {
        return Err(JcardError::Shape("expected [\"vcard\", [properties]]"));
    };
    if tag != "vcard" {
        return Err(JcardError::Shape("expected [\"vcard\", [properties]]"));
    }
    let mut contact = Contact::new();
    for prop in props {
        let Some(parts) = prop.as_array() else {
            return Err(JcardError::Shape("a property is not an array"));
        };
        let [
            Value::String(name),
            Value::Object(params),
            Value::String(ty),
            values @ ..,
        ] = parts.as_slice()
        else {
            return Err(JcardError::Shape(
                "a property is not [name, {params}, type, value…]",
            ));
        };
        let name = name.to_ascii_uppercase();
        if name == "VERSION" && !params.keys().any(|k| k.eq_ignore_ascii_case("group")) {
            continue;
        }
        if values.is_empty() {
            return Err(JcardError::Shape("a property has no value"));
        }
        let mut group = None;
        let mut param_list = Vec::with_capacity(params.len());
        for (k, v) in params {
            if k.eq_ignore_ascii_case("group") {
                group = Some(scalar(v));
                continue;
            }
            let values = match v {
                Value::Array(items) => items.iter().map(scalar).collect(),
                other => vec![scalar(other)],
            };
            param_list.push(Param {
                name: k.to_ascii_uppercase(),
                values,
            });
        }
        if !ty.eq_ignore_ascii_case(default_value_type(&name)) {
            param_list.push(Param::new("VALUE", &ty.to_ascii_lowercase()));
        }
        canonicalize_params(&name, &mut param_list);
        let raw = match value_kind(&name, &param_list) {
            ValueKind::Text => escape_text(&scalar(&values[0]), false),
            ValueKind::List => values
                .iter()
                .map(|v| escape_text(&scalar(v), true))
                .collect::<Vec<_>>()
                .join(","),
            ValueKind::Compound { .. } => match &values[0] {
                Value::Array(components) => components
                    .iter()
                    .map(|c| match c {
                        Value::Array(items) => items
                            .iter()
                            .map(|i| escape_text(&scalar(i), true))
                            .collect::<Vec<_>>()
                            .join(","),
                        other => escape_text(&scalar(other), true),
                    })
                    .collect::<Vec<_>>()
                    .join(";"),
                other => escape_text(&scalar(other), true),
            },
            ValueKind::Date => {
                let s = scalar(&values[0]);
                date_to_basic(&s).unwrap_or(s)
            }
            ValueKind::Raw => values.iter().map(scalar).collect::<Vec<_>>().join(","),
        };
        let value = canonical_value(&name, &param_list, &raw);
        contact.push(Property {
            group,
            name,
            params: param_list,
            value,
        });
    }
    Ok(contact)
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vcard::read_all;

    #[test]
    fn rfc7095_example_shape() {
        let input = "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Simon Perreault\r\nN:Perreault;Simon;;;ing. jr,M.Sc.\r\nBDAY:--0203\r\nTEL;VALUE=uri;TYPE=\"work,voice\";PREF=1:tel:+1-418-656-9254;ext=102\r\nEND:VCARD\r\n";
        let (cards, _) = read_all(input.as_bytes());
        let c = &cards[0].contact;
        let j = to_jcard(c);
        let text = j.to_string();
        assert!(
            text.contains(r#"["n",{},"text",["Perreault","Simon","","",["ing. jr","M.Sc."]]]"#),
            "{text}"
        );
        assert!(
            text.contains(r#"["bday",{},"date-and-or-time","--02-03"]"#),
            "{text}"
        );
        assert!(
            text.contains(r#""uri","tel:+1-418-656-9254;ext=102""#),
            "{text}"
        );
        assert_eq!(&from_jcard(&j).unwrap(), c);
    }

    #[test]
    fn rejects_non_jcard() {
        assert!(from_jcard_str("{}").is_err());
        assert!(from_jcard_str("[\"vcard\", 3]").is_err());
        assert!(from_jcard_str("not json").is_err());
    }
}
