//! Normalization for matching: the same person written two ways gives the same key.
//!
//! These keys feed blind indexes and deduplication; they are never shown or stored in clear.

use std::fmt;

use crate::calling_codes::CALLING_CODES;

/// An email address in matching form: trimmed, `mailto:` removed, domain lower case, and the
/// local part lower case unless told otherwise (RFC 5321 allows a case-sensitive local part;
/// no mainstream provider uses one).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Option<Self> {
        Self::parse_with(s, true)
    }

    pub fn parse_with(s: &str, fold_local_part: bool) -> Option<Self> {
        let s = s.trim();
        let s = s
            .strip_prefix("mailto:")
            .or_else(|| s.strip_prefix("MAILTO:"))
            .unwrap_or(s);
        let (local, domain) = s.rsplit_once('@')?;
        let domain = domain.trim_end_matches('.');
        if local.is_empty() || domain.is_empty() || s.contains(char::is_whitespace) {
            return None;
        }
        let local = if fold_local_part {
            local.to_lowercase()
        } else {
            local.to_owned()
        };
        Some(Self(format!("{local}@{}", domain.to_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Email(<redacted>)")
    }
}

/// A phone number in E.164 form (`+4930901820`), for matching. Numbers that are well formed
/// but not assigned (fictional `555` numbers, say) are kept: what matters is that two spellings
/// of one number give one key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Phone(String);

impl Phone {
    /// Parses a number as dialled in `default_region` (ISO 3166 code such as `US`, `DE`) unless it
    /// carries its own country code. `tel:` URIs are accepted. `None` when it is not a number.
    pub fn parse(s: &str, default_region: Option<&str>) -> Option<Self> {
        let s = s.trim();
        let s = s.strip_prefix("tel:").unwrap_or(s);
        let s = s.split(';').next().unwrap_or(s);
        if let Some(e164) = plain_international(s) {
            return Some(Self(e164));
        }
        let region = default_region.and_then(|r| {
            r.to_ascii_uppercase()
                .parse::<phonenumber::country::Id>()
                .ok()
        });
        let number = phonenumber::parse(region, s).ok()?;
        Some(Self(
            number.format().mode(phonenumber::Mode::E164).to_string(),
        ))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The E.164 form of an international number written plainly (`+1 555-0100`), without the
/// full parser (which costs tens of microseconds a number, and loads its metadata first). Only
/// where the result is certain to equal the parser's: a known country code whose main region
/// strips nothing but its national prefix, and a national part that does not start with that
/// prefix ([`CALLING_CODES`]). Anything else (parentheses, a `(0)`, letters, other countries'
/// parsing rules) goes to the full parser.
fn plain_international(s: &str) -> Option<String> {
    let rest = s.strip_prefix('+')?;
    let mut digits = String::with_capacity(16);
    digits.push('+');
    for c in rest.chars() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '/' => {}
            _ => return None,
        }
    }
    let national_len = digits.len() - 1;
    if !(7..=15).contains(&national_len) || digits.as_bytes()[1] == b'0' {
        return None;
    }
    let (code_len, plain, prefix) = (1..=3).find_map(|len| {
        let code: u16 = digits[1..1 + len].parse().ok()?;
        let at = CALLING_CODES.binary_search_by_key(&code, |c| c.0).ok()?;
        let (_, plain, prefix) = CALLING_CODES[at];
        Some((len, plain, prefix))
    })?;
    let national = &digits[1 + code_len..];
    if !plain || national.len() < 4 || prefix.is_some_and(|p| national.starts_with(p)) {
        return None;
    }
    Some(digits)
}

impl fmt::Debug for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Phone(<redacted>)")
    }
}

/// Whether `region` names a region the phone parser knows.
pub fn is_known_region(region: &str) -> bool {
    region
        .to_ascii_uppercase()
        .parse::<phonenumber::country::Id>()
        .is_ok()
}

/// A UID in matching form: trimmed; `urn:uuid:` removed and UUIDs lower case.
pub fn normalize_uid(s: &str) -> Option<String> {
    let s = s.trim();
    let bare = s
        .strip_prefix("urn:uuid:")
        .or_else(|| s.strip_prefix("URN:UUID:"))
        .unwrap_or(s);
    if bare.is_empty() {
        return None;
    }
    let is_uuid = bare.len() == 36 && bare.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    Some(if is_uuid {
        bare.to_ascii_lowercase()
    } else {
        bare.to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_fold_case_and_trim() {
        let a = Email::parse("  Jane.Doe@Example.COM ").unwrap();
        let b = Email::parse("mailto:jane.doe@example.com").unwrap();
        assert_eq!(a, b);
        assert_eq!(
            Email::parse_with("Jane@Example.com", false)
                .unwrap()
                .as_str(),
            "Jane@example.com"
        );
        assert!(Email::parse("not an email").is_none());
        assert!(Email::parse("@example.com").is_none());
    }

    #[test]
    fn phones_become_e164() {
        let us = Phone::parse("(202) 555-0143", Some("US"));
        let intl = Phone::parse("+1 202-555-0143", None);
        assert!(us.is_some());
        assert_eq!(us, intl);
        assert_eq!(
            Phone::parse("030 901820", Some("de")).unwrap().as_str(),
            "+4930901820"
        );
        assert_eq!(
            Phone::parse("tel:+49-30-901820;ext=1", None)
                .unwrap()
                .as_str(),
            "+4930901820"
        );
        assert!(Phone::parse("12", Some("US")).is_none());
    }

    /// The calling codes of the plain path as the parser's metadata has them.
    fn calling_codes_of_the_parser() -> Vec<(u16, bool, Option<String>)> {
        (1u16..=999)
            .filter_map(|code| {
                let regions = phonenumber::metadata::DATABASE.by_code(&code)?;
                let main = regions
                    .iter()
                    .find(|m| m.is_main_country_for_code())
                    .or(regions.first())?;
                let plain = main.national_prefix_for_parsing().is_none()
                    && main.national_prefix_transform_rule().is_none();
                Some((code, plain, main.national_prefix().map(str::to_owned)))
            })
            .collect()
    }

    #[test]
    fn calling_codes_match_the_parser() {
        let parser = calling_codes_of_the_parser();
        let table: Vec<(u16, bool, Option<String>)> = CALLING_CODES
            .iter()
            .map(|&(code, plain, prefix)| (code, plain, prefix.map(str::to_owned)))
            .collect();
        let rows: String = parser
            .iter()
            .map(|(code, plain, prefix)| format!("    ({code}, {plain}, {prefix:?}),\n"))
            .collect();
        assert!(
            table == parser,
            "the phone parser's metadata changed: CALLING_CODES in src/calling_codes.rs should read\n{rows}"
        );
    }

    #[test]
    fn plain_numbers_give_what_the_parser_gives() {
        let mut plain = 0;
        for (code, _, _) in calling_codes_of_the_parser() {
            for national in [
                "5550100",
                "30 901820",
                "0301234567",
                "1-555-010-0199",
                "2025550143",
            ] {
                let s = format!("+{code} {national}");
                let Some(fast) = plain_international(&s) else {
                    continue;
                };
                plain += 1;
                let full = phonenumber::parse(None, &s)
                    .map(|n| n.format().mode(phonenumber::Mode::E164).to_string());
                assert_eq!(Some(fast), full.ok(), "{s}");
            }
        }
        assert!(plain > 500, "only {plain} numbers took the plain path");
    }

    #[test]
    fn uids_normalise_uuid_urns() {
        assert_eq!(
            normalize_uid("urn:uuid:0D6D4E8A-1111-2222-3333-444455556666").as_deref(),
            Some("0d6d4e8a-1111-2222-3333-444455556666")
        );
        assert_eq!(normalize_uid(" abc ").as_deref(), Some("abc"));
        assert_eq!(normalize_uid("  "), None);
    }

    #[test]
    fn debug_hides_content() {
        let e = Email::parse("secret@example.com").unwrap();
        assert!(!format!("{e:?}").contains("secret"));
    }
}
