//! vCard writer: 4.0 or 3.0, folded at 75 octets on character boundaries, CRLF line endings.

use base64::Engine as _;

use crate::model::{Contact, Param, Property};

/// Which vCard version to write. CardDAV servers differ; choose per destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VcardVersion {
    V3,
    V4,
}

impl VcardVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            VcardVersion::V3 => "3.0",
            VcardVersion::V4 => "4.0",
        }
    }
}

/// Appends one card to `out`.
pub fn write_card(out: &mut String, contact: &Contact, version: VcardVersion) {
    out.push_str("BEGIN:VCARD\r\nVERSION:");
    out.push_str(version.as_str());
    out.push_str("\r\n");
    let mut line = String::with_capacity(128);
    for property in contact.properties() {
        line.clear();
        match version {
            VcardVersion::V4 => logical_line(&mut line, property, &[], &property.value),
            VcardVersion::V3 => v3_logical_line(&mut line, property),
        }
        fold_into(out, &line);
    }
    out.push_str("END:VCARD\r\n");
}

/// One card as a string.
pub fn to_vcard(contact: &Contact, version: VcardVersion) -> String {
    let mut out = String::with_capacity(512);
    write_card(&mut out, contact, version);
    out
}

/// vCard 3.0 carries inline binary as `ENCODING=b` with a `TYPE`, and non-inline values of
/// binary properties with `VALUE=uri`.
fn v3_logical_line(line: &mut String, p: &Property) {
    let prefix = match p.name.as_str() {
        "PHOTO" | "LOGO" => Some("image/"),
        "SOUND" => Some("audio/"),
        "KEY" => Some("application/"),
        _ => None,
    };
    // A value that kept its own ENCODING (it was not valid base64) is written as it was read.
    let Some(prefix) = prefix.filter(|_| !p.params.iter().any(|q| q.name == "ENCODING")) else {
        return logical_line(line, p, &[], &p.value);
    };
    if let Some((subtype, payload)) = inline_binary(&p.value, prefix) {
        let extra = [
            Param::new("ENCODING", "b"),
            Param::new("TYPE", &subtype.to_ascii_uppercase()),
        ];
        return logical_line(line, p, &extra, payload);
    }
    if p.params.iter().any(|q| q.name == "VALUE") {
        logical_line(line, p, &[], &p.value)
    } else {
        logical_line(line, p, &[Param::new("VALUE", "uri")], &p.value)
    }
}

/// `data:image/png;base64,XXXX` → (`png`, `XXXX`) when the reader would give back exactly it.
fn inline_binary<'a>(value: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let rest = value.strip_prefix("data:")?.strip_prefix(prefix)?;
    let (subtype, payload) = rest.split_once(";base64,")?;
    let subtype_ok = !subtype.is_empty()
        && subtype
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b));
    // Only what the reader turns back into this very data URI.
    let payload_ok = !payload.is_empty()
        && payload
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b))
        && base64::engine::general_purpose::STANDARD
            .decode(payload)
            .is_ok();
    (subtype_ok && payload_ok).then_some((subtype, payload))
}

fn logical_line(line: &mut String, p: &Property, extra: &[Param], value: &str) {
    if let Some(g) = &p.group {
        line.push_str(g);
        line.push('.');
    }
    line.push_str(&p.name);
    for param in extra.iter().chain(&p.params) {
        line.push(';');
        line.push_str(&param.name);
        line.push('=');
        for (i, v) in param.values.iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            push_param_value(line, v);
        }
    }
    line.push(':');
    line.push_str(value);
}

fn push_param_value(line: &mut String, v: &str) {
    let quote = v.contains([',', ';', ':']);
    if quote {
        line.push('"');
    }
    for c in v.chars() {
        match c {
            '^' => line.push_str("^^"),
            '"' => line.push_str("^'"),
            '\n' => line.push_str("^n"),
            '\r' => {}
            c => line.push(c),
        }
    }
    if quote {
        line.push('"');
    }
}

/// Folds at 75 octets (RFC 6350 §3.2), never inside a UTF-8 sequence.
fn fold_into(out: &mut String, line: &str) {
    const FIRST: usize = 75;
    const NEXT: usize = 74;
    if line.len() <= FIRST {
        out.push_str(line);
        out.push_str("\r\n");
        return;
    }
    let mut rest = line;
    let mut limit = FIRST;
    let mut first = true;
    while !rest.is_empty() {
        let mut cut = limit.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if !first {
            out.push(' ');
        }
        out.push_str(&rest[..cut]);
        out.push_str("\r\n");
        rest = &rest[cut..];
        limit = NEXT;
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vcard::read::read_all;

    #[test]
    fn folds_on_char_boundaries() {
        let mut c = Contact::new();
        c.push(Property::text("NOTE", &"日本語のテキスト".repeat(20)));
        let text = to_vcard(&c, VcardVersion::V4);
        for line in text.split("\r\n") {
            assert!(line.len() <= 75, "{} octets", line.len());
        }
        let (cards, rejected) = read_all(text.as_bytes());
        assert!(rejected.is_empty());
        assert_eq!(cards[0].contact, c);
    }

    #[test]
    fn photo_in_3_0_is_inline_binary() {
        let mut c = Contact::new();
        c.push(Property::new(
            "PHOTO",
            vec![],
            "data:image/png;base64,iVBORw0KGgo=",
        ));
        c.push(Property::new(
            "LOGO",
            vec![],
            "https://example.com/logo.png",
        ));
        let text = to_vcard(&c, VcardVersion::V3);
        assert!(
            text.contains("PHOTO;ENCODING=b;TYPE=PNG:iVBORw0KGgo="),
            "{text}"
        );
        assert!(
            text.contains("LOGO;VALUE=uri:https://example.com/logo.png"),
            "{text}"
        );
        let (cards, _) = read_all(text.as_bytes());
        assert_eq!(cards[0].contact, c);
    }
}
