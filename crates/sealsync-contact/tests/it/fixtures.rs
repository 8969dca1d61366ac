//! Every fixture and sample card survives every codec unchanged.

use std::path::{Path, PathBuf};

use sealsync_contact::csv::{CsvLayout, CsvPreset, CsvReader, CsvWriter};
use sealsync_contact::jcard::{from_jcard, to_jcard};
use sealsync_contact::vcard::{VcardVersion, read_all, to_vcard};
use sealsync_contact::{Contact, ContentHash};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn vcf_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["tests/fixtures/vcard", "examples/contacts"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "vcf") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() > 60, "fixture corpus missing: {}", files.len());
    files
}

fn read_file(path: &Path) -> (Vec<Contact>, usize) {
    let bytes = std::fs::read(path).unwrap();
    let (cards, rejected) = read_all(&bytes);
    (
        cards.into_iter().map(|c| c.contact).collect(),
        rejected.len(),
    )
}

#[test]
fn corpus_reads_without_rejections_except_broken() {
    for path in vcf_files() {
        let (contacts, rejected) = read_file(&path);
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name == "broken.vcf" {
            continue;
        }
        assert_eq!(rejected, 0, "{name}: rejected cards");
        assert!(!contacts.is_empty(), "{name}: no cards");
        for c in &contacts {
            assert!(
                c.formatted_name().is_some_and(|f| !f.is_empty()),
                "{name}: card without FN"
            );
        }
    }
}

#[test]
fn corpus_round_trips_through_vcard4_vcard3_and_jcard() {
    for path in vcf_files() {
        let (contacts, _) = read_file(&path);
        let name = path.display().to_string();
        for c in &contacts {
            for version in [VcardVersion::V4, VcardVersion::V3] {
                let text = to_vcard(c, version);
                let (again, rejected) = read_all(text.as_bytes());
                assert!(rejected.is_empty(), "{name} {version:?}: {rejected:?}");
                assert_eq!(&again[0].contact, c, "{name} via {version:?}");
                for line in text.split("\r\n") {
                    assert!(line.len() <= 75, "{name}: line of {} octets", line.len());
                }
            }
            let json = to_jcard(c).to_string();
            let again = from_jcard(&serde_json::from_str(&json).unwrap()).unwrap();
            assert_eq!(&again, c, "{name} via jCard");
            assert_eq!(ContentHash::of(&again), ContentHash::of(c));
        }
    }
}

#[test]
fn broken_file_keeps_every_good_card() {
    let (contacts, rejected) = read_file(&root().join("tests/fixtures/vcard/broken.vcf"));
    let uids: Vec<String> = contacts.iter().filter_map(|c| c.uid()).collect();
    for must in ["broken-ok-1", "broken-ok-2", "broken-ok-3"] {
        assert!(
            uids.iter().any(|u| u == must),
            "{must} missing from {uids:?}"
        );
    }
    // Never a card that mixes two cards' properties.
    for c in &contacts {
        assert_eq!(c.all("UID").count(), 1);
    }
    let bytes = std::fs::read(root().join("tests/fixtures/vcard/broken.vcf")).unwrap();
    let (_, rejected_items) = read_all(&bytes);
    let lines: Vec<u64> = rejected_items.iter().map(|r| r.line).collect();
    for expected in [8, 26, 34, 36, 37, 52] {
        assert!(
            lines.contains(&expected),
            "no report for line {expected}: {lines:?}"
        );
    }
    assert_eq!(rejected, rejected_items.len());
    for r in &rejected_items {
        assert!(
            !r.reason.contains("Alice") && !r.reason.contains("example.com"),
            "{}",
            r.reason
        );
    }
}

#[test]
fn decoded_values_match_expectations() {
    for file in ["folded_utf8", "escapes_and_groups"] {
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(
                root().join(format!("tests/fixtures/vcard/{file}.expected.json")),
            )
            .unwrap(),
        )
        .unwrap();
        let mut contacts = read_file(&root().join(format!("tests/fixtures/vcard/{file}.vcf"))).0;
        if file == "folded_utf8" {
            contacts.extend(read_file(&root().join("tests/fixtures/vcard/bom_lf.vcf")).0);
        }
        for (uid, want) in expected["cards"].as_object().unwrap() {
            let Some(c) = contacts
                .iter()
                .find(|c| c.uid().as_deref() == Some(uid.as_str()))
            else {
                continue;
            };
            if let Some(fn_) = want.get("FN").and_then(|v| v.as_str()) {
                assert_eq!(c.formatted_name().as_deref(), Some(fn_), "{uid} FN");
            }
            if let Some(note) = want.get("NOTE").and_then(|v| v.as_str()) {
                assert_eq!(c.note().as_deref(), Some(note), "{uid} NOTE");
            }
            if let Some(cats) = want.get("CATEGORIES").and_then(|v| v.as_array()) {
                let cats: Vec<&str> = cats.iter().filter_map(|v| v.as_str()).collect();
                assert_eq!(c.categories(), cats, "{uid} CATEGORIES");
            }
        }
    }
}

#[test]
fn vendor_specifics_are_understood() {
    let (outlook, _) = read_file(&root().join("tests/fixtures/vcard/outlook_2.1.vcf"));
    assert!(
        outlook
            .iter()
            .any(|c| c.note().is_some_and(|n| n.contains('ü'))),
        "QP UTF-8 note"
    );
    assert!(
        outlook
            .iter()
            .all(|c| c.all("TEL").all(|t| !t.types().is_empty())),
        "bare types"
    );
    let (android, _) = read_file(&root().join("tests/fixtures/vcard/android_2.1.vcf"));
    assert!(
        android
            .iter()
            .any(|c| c.formatted_name().is_some_and(|f| f.contains("山田")))
    );
    let (apple, _) = read_file(&root().join("tests/fixtures/vcard/apple_icloud_3.0.vcf"));
    assert!(apple.iter().any(|c| {
        c.properties()
            .iter()
            .any(|p| p.group.is_some() && p.name == "X-ABLABEL")
    }));
    assert!(apple.iter().any(|c| {
        c.photo()
            .is_some_and(|p| p.starts_with("data:image/jpeg;base64,"))
    }));
}

#[test]
fn csv_presets_read_vendor_exports_and_round_trip() {
    for (file, layout) in [
        ("google.csv", CsvLayout::preset(CsvPreset::Google)),
        ("outlook.csv", CsvLayout::preset(CsvPreset::Outlook)),
        (
            "custom.csv",
            CsvLayout::from_mapping_toml(
                &std::fs::read_to_string(root().join("tests/fixtures/csv/custom_map.toml"))
                    .unwrap(),
            )
            .unwrap(),
        ),
    ] {
        let bytes = std::fs::read(root().join("tests/fixtures/csv").join(file)).unwrap();
        let contacts: Vec<Contact> = CsvReader::new(&bytes[..], layout.clone())
            .unwrap()
            .map(|r| r.unwrap().1)
            .collect();
        assert!(contacts.len() >= 4, "{file}: {}", contacts.len());
        for c in &contacts {
            assert!(c.formatted_name().is_some(), "{file}: no name derived");
        }
        let mut w = CsvWriter::new(Vec::new(), layout.clone()).unwrap();
        for c in &contacts {
            w.write(c).unwrap();
        }
        let out = w.finish().unwrap();
        let again: Vec<Contact> = CsvReader::new(&out[..], layout)
            .unwrap()
            .map(|r| r.unwrap().1)
            .collect();
        assert_eq!(again, contacts, "{file}");
    }
}
