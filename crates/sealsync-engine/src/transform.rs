//! What a link does to contacts on the way out and in, and how a matched contact is merged.

use sealsync_contact::{Contact, Email, Property};

use crate::spec::LinkSpec;

/// Properties that hold one value: merging takes one side's.
const SINGLE: &[&str] = &[
    "FN",
    "N",
    "ORG",
    "TITLE",
    "ROLE",
    "BDAY",
    "ANNIVERSARY",
    "NOTE",
    "PHOTO",
    "LOGO",
    "UID",
    "KIND",
    "GENDER",
    "TZ",
    "GEO",
    "REV",
    "PRODID",
    "VERSION",
    "NICKNAME",
];

/// The contact as the endpoint gets it: renamed, dropped and masked properties applied.
pub fn outbound(spec: &LinkSpec, hub: &Contact) -> Contact {
    let mut out = Contact::new();
    for p in hub.properties() {
        if spec.drop.contains(&p.name) {
            continue;
        }
        let mut p = p.clone();
        if spec.mask.contains(&p.name) {
            p = mask(&p);
        }
        if let Some(to) = spec.map.get(&p.name) {
            p.name.clone_from(to);
        }
        out.push(p);
    }
    out
}

/// The endpoint's contact in hub terms (renames reversed), without what the link never
/// carries (dropped and masked properties).
pub fn inbound_raw(spec: &LinkSpec, remote: &Contact) -> Contact {
    let mut out = Contact::new();
    for p in remote.properties() {
        let mut p = p.clone();
        if let Some((from, _)) = spec.map.iter().find(|(_, to)| **to == p.name) {
            p.name.clone_from(from);
        }
        if spec.drop.contains(&p.name) || spec.mask.contains(&p.name) {
            continue;
        }
        out.push(p);
    }
    out
}

/// The hub contact a pulled endpoint contact becomes: its values, plus the hub's values of the
/// properties this link does not carry, so that dropping or masking on the way out loses nothing.
pub fn inbound(spec: &LinkSpec, remote: &Contact, hub: Option<&Contact>) -> Contact {
    let mut out = inbound_raw(spec, remote);
    if let Some(hub) = hub {
        for p in hub.properties() {
            if spec.drop.contains(&p.name) || spec.mask.contains(&p.name) {
                out.push(p.clone());
            }
        }
    }
    out
}

/// Merges `incoming` into `hub`: every distinct value of multi-valued properties is kept; a
/// single value missing from the hub is taken, and one present in both is taken from
/// `incoming` only when `incoming_wins`. The hub's UID always stays.
pub fn merge(hub: &Contact, incoming: &Contact, incoming_wins: bool) -> Contact {
    let mut out = hub.clone();
    for p in incoming.properties() {
        if SINGLE.contains(&p.name.as_str()) {
            let present = out.first(&p.name).is_some();
            if !present {
                out.push(p.clone());
            } else if incoming_wins && p.name != "UID" && p.name != "VERSION" {
                let at = out.properties().iter().position(|q| q.name == p.name);
                out.remove_all(&p.name);
                let props = out.properties_mut();
                let at = at.unwrap_or(props.len()).min(props.len());
                props.insert(at, p.clone());
            }
        } else if !out.properties().iter().any(|q| same_value(q, p)) {
            out.push(p.clone());
        }
    }
    out
}

fn same_value(a: &Property, b: &Property) -> bool {
    if a.name != b.name {
        return false;
    }
    match a.name.as_str() {
        "EMAIL" => match (Email::parse(&a.text_value()), Email::parse(&b.text_value())) {
            (Some(x), Some(y)) => x == y,
            _ => a.value == b.value,
        },
        "TEL" => digits(&a.text_value()) == digits(&b.text_value()),
        _ => a.value == b.value,
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// A masked value: the first character, then `***`.
fn mask(p: &Property) -> Property {
    let text = p.text_value();
    let first: String = text.chars().take(1).collect();
    let mut m = Property::text(&p.name, &format!("{first}***"));
    m.group.clone_from(&p.group);
    m.params.clone_from(&p.params);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact(props: &[(&str, &str)]) -> Contact {
        let mut c = Contact::new();
        for (n, v) in props {
            c.push(Property::text(n, v));
        }
        c
    }

    #[test]
    fn drop_and_mask_lose_nothing_on_the_way_back() {
        let spec = LinkSpec {
            drop: vec!["NOTE".into()],
            mask: vec!["TEL".into()],
            ..LinkSpec::default()
        };
        let hub = contact(&[("FN", "Ann"), ("NOTE", "secret"), ("TEL", "+4930123")]);
        let out = outbound(&spec, &hub);
        assert!(out.note().is_none());
        assert_eq!(out.phones(), vec!["+***".to_owned()]);
        let mut edited = out.clone();
        edited.set_text("FN", Some("Ann B"));
        let back = inbound(&spec, &edited, Some(&hub));
        assert_eq!(back.formatted_name().as_deref(), Some("Ann B"));
        assert_eq!(back.note().as_deref(), Some("secret"));
        assert_eq!(back.phones(), vec!["+4930123".to_owned()]);
    }

    #[test]
    fn renames_round_trip() {
        let spec = LinkSpec {
            map: [("NOTE".to_owned(), "X-REMARK".to_owned())].into(),
            ..LinkSpec::default()
        };
        let hub = contact(&[("FN", "Ann"), ("NOTE", "n")]);
        let out = outbound(&spec, &hub);
        assert!(out.first("X-REMARK").is_some() && out.first("NOTE").is_none());
        assert_eq!(inbound_raw(&spec, &out), hub);
    }

    #[test]
    fn merge_keeps_every_email_and_chooses_single_values_by_priority() {
        let hub = contact(&[("UID", "a"), ("FN", "Ann"), ("EMAIL", "ann@example.org")]);
        let other = contact(&[
            ("UID", "b"),
            ("FN", "Ann Smith"),
            ("EMAIL", "ANN@example.org"),
            ("EMAIL", "ann@work.example"),
            ("TITLE", "CEO"),
        ]);
        let low = merge(&hub, &other, false);
        assert_eq!(low.formatted_name().as_deref(), Some("Ann"));
        assert_eq!(low.emails().len(), 2);
        assert_eq!(low.title().as_deref(), Some("CEO"));
        assert_eq!(low.uid().as_deref(), Some("a"));
        let high = merge(&hub, &other, true);
        assert_eq!(high.formatted_name().as_deref(), Some("Ann Smith"));
        assert_eq!(high.uid().as_deref(), Some("a"));
    }
}
