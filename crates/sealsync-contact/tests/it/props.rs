//! Property tests: arbitrary contacts survive every codec; the hash ignores form.

use proptest::prelude::*;
use sealsync_contact::jcard::{from_jcard, to_jcard};
use sealsync_contact::vcard::{VcardVersion, read_all, to_vcard};
use sealsync_contact::{Contact, ContentHash, Param, Property};

fn text() -> impl Strategy<Value = String> {
    // Letters from several scripts, and every character vCard escaping cares about.
    proptest::collection::vec(
        prop_oneof![
            Just('a'),
            Just('Z'),
            Just('é'),
            Just('日'),
            Just('ж'),
            Just('😀'),
            Just(' '),
            Just(','),
            Just(';'),
            Just(':'),
            Just('\\'),
            Just('\n'),
            Just('"'),
            Just('='),
            Just('^'),
        ],
        0..40,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn param() -> impl Strategy<Value = Param> {
    (
        prop_oneof![
            Just("TYPE"),
            Just("PREF"),
            Just("X-LABEL"),
            Just("LANGUAGE")
        ],
        proptest::collection::vec(text(), 1..3),
    )
        .prop_map(|(n, values)| Param {
            name: n.to_owned(),
            values,
        })
}

fn property() -> impl Strategy<Value = Property> {
    let name = prop_oneof![
        Just("FN"),
        Just("NOTE"),
        Just("EMAIL"),
        Just("TEL"),
        Just("N"),
        Just("ADR"),
        Just("ORG"),
        Just("CATEGORIES"),
        Just("NICKNAME"),
        Just("X-CUSTOM"),
        Just("URL"),
        Just("BDAY"),
        Just("TITLE"),
    ];
    (
        name,
        proptest::collection::vec(param(), 0..3),
        proptest::collection::vec(text(), 1..6),
        proptest::option::of("[a-z]{1,6}"),
    )
        .prop_map(|(name, params, parts, group)| {
            let value = match name {
                "N" | "ADR" | "ORG" => {
                    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                    Property::compound(name, &refs).value
                }
                "BDAY" => "19850412".to_owned(),
                _ => Property::text(name, &parts[0]).value,
            };
            let mut p = Property::new(name, params, &value);
            p.group = group;
            p
        })
}

/// A contact in canonical form: what the reader gives for its own 4.0 output.
fn canonical(c: &Contact) -> Contact {
    let (cards, rejected) = read_all(to_vcard(c, VcardVersion::V4).as_bytes());
    assert!(rejected.is_empty(), "{rejected:?}");
    cards.into_iter().next().unwrap().contact
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_contacts_survive_every_format(props in proptest::collection::vec(property(), 1..12)) {
        let c = canonical(&Contact::from_properties(props));
        for version in [VcardVersion::V4, VcardVersion::V3] {
            let (again, rejected) = read_all(to_vcard(&c, version).as_bytes());
            prop_assert!(rejected.is_empty());
            prop_assert_eq!(&again[0].contact, &c);
        }
        let j = from_jcard(&serde_json::from_str(&to_jcard(&c).to_string()).unwrap()).unwrap();
        prop_assert_eq!(&j, &c);
    }

    #[test]
    fn hash_ignores_folding_line_endings_and_order(props in proptest::collection::vec(property(), 1..12), seed in any::<u64>()) {
        let c = canonical(&Contact::from_properties(props));
        let text = to_vcard(&c, VcardVersion::V4);
        // Refold every line at a different width, with LF endings.
        let unfolded = text.replace("\r\n ", "");
        let mut refolded = String::new();
        for line in unfolded.split("\r\n").filter(|l| !l.is_empty()) {
            let mut chars = line.chars().peekable();
            let mut n = 0;
            while let Some(ch) = chars.next() {
                refolded.push(ch);
                n += 1;
                if n % 20 == 0 && chars.peek().is_some() { refolded.push_str("\n "); }
            }
            refolded.push('\n');
        }
        let (cards, _) = read_all(refolded.as_bytes());
        prop_assert_eq!(ContentHash::of(&cards[0].contact), ContentHash::of(&c));
        let mut shuffled = c.clone().into_properties();
        let len = shuffled.len();
        if len > 1 { shuffled.rotate_left((seed as usize) % len); }
        prop_assert_eq!(ContentHash::of(&Contact::from_properties(shuffled)), ContentHash::of(&c));
    }

    #[test]
    fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut input = b"BEGIN:VCARD\r\n".to_vec();
        input.extend_from_slice(&bytes);
        let _ = read_all(&input);
    }
}

/// The content hash as its layout is defined, one field at a time: stored content MACs depend
/// on every byte of it, so however it is computed it must give this hash.
fn content_hash_by_layout(contact: &Contact) -> [u8; 32] {
    use aws_lc_rs::digest;
    let mut props: Vec<&Property> = contact
        .properties()
        .iter()
        .filter(|p| p.name != "REV" && p.name != "PRODID")
        .collect();
    let group = |p: &Property| p.group.as_deref().unwrap_or("").to_ascii_lowercase();
    props.sort_by(|a, b| {
        (
            &a.name,
            a.group.as_ref().map(|_| group(a)),
            &a.params,
            &a.value,
        )
            .cmp(&(
                &b.name,
                b.group.as_ref().map(|_| group(b)),
                &b.params,
                &b.value,
            ))
    });
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"sealsync content v1");
    let mut field = |tag: u8, bytes: &[u8]| {
        ctx.update(&[tag]);
        ctx.update(&(bytes.len() as u64).to_le_bytes());
        ctx.update(bytes);
    };
    for p in props {
        field(1, group(p).as_bytes());
        field(2, p.name.as_bytes());
        for param in &p.params {
            field(3, param.name.as_bytes());
            for v in &param.values {
                field(4, v.as_bytes());
            }
        }
        field(5, p.value.as_bytes());
    }
    ctx.finish().as_ref().try_into().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn content_hash_follows_its_layout(
        props in proptest::collection::vec(property(), 0..12),
        groups in proptest::collection::vec(proptest::option::of("[a-zA-Z]{1,6}"), 12),
    ) {
        let mut props = props;
        for (p, g) in props.iter_mut().zip(groups) {
            p.group = g;
        }
        props.push(Property::new("REV", vec![], "20240101T000000Z"));
        let c = Contact::from_properties(props);
        prop_assert_eq!(ContentHash::of(&c).0, content_hash_by_layout(&c));
    }
}

#[test]
fn content_hash_of_a_known_contact_is_unchanged() {
    let text = "BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Ada Lovelace\r\nItem1.EMAIL;TYPE=work:ada@example.org\r\n\
                TEL;TYPE=cell,voice:+44 20 7946 0000\r\nNOTE:Analyst\\, poet\r\nREV:20240101T000000Z\r\n\
                PRODID:-//x//y\r\nEND:VCARD\r\n";
    let c = read_all(text.as_bytes()).0.remove(0).contact;
    assert_eq!(ContentHash::of(&c).0, content_hash_by_layout(&c));
    assert_eq!(
        ContentHash::of(&c).to_hex(),
        "d6ffbb27970b033c829777f8055df64d69b96527f8528d48c6d7b9f679ca0573"
    );
}
