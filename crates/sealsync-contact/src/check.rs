//! Invariants over arbitrary input, shared by the fuzz targets and the test that replays their
//! corpus: reading never panics, and whatever is read survives every writer unchanged.

use crate::csv::{CsvLayout, CsvPreset, CsvReader, CsvWriter};
use crate::jcard::{from_jcard, to_jcard};
use crate::vcard::{VcardVersion, read_all, to_vcard};

/// Reads `data` as vCard; every card read must come back identical through vCard 4.0, vCard
/// 3.0 and jCard. `Err` names the broken invariant.
pub fn vcard_round_trip(data: &[u8]) -> Result<usize, String> {
    let (cards, _) = read_all(data);
    for card in &cards {
        for version in [VcardVersion::V4, VcardVersion::V3] {
            let text = to_vcard(&card.contact, version);
            let (again, rejected) = read_all(text.as_bytes());
            if !rejected.is_empty() || again.len() != 1 {
                return Err(format!(
                    "{version:?} output not read back as one card: {rejected:?}"
                ));
            }
            if again[0].contact != card.contact {
                return Err(format!("{version:?} round trip changed the card"));
            }
        }
        // jCard reserves the parameter name `group` for the property group: a vCard parameter
        // called GROUP (undefined in vCard) cannot be carried there.
        if card
            .contact
            .properties()
            .iter()
            .any(|p| p.params.iter().any(|q| q.name == "GROUP"))
        {
            continue;
        }
        let json = to_jcard(&card.contact);
        match from_jcard(&json) {
            Ok(c) if c == card.contact => {}
            Ok(_) => return Err("jCard round trip changed the card".into()),
            Err(e) => return Err(format!("jCard output not read back: {e}")),
        }
    }
    Ok(cards.len())
}

/// Reads `data` as Google CSV; whatever is read must survive a CSV write and read.
pub fn csv_round_trip(data: &[u8]) -> Result<usize, String> {
    let layout = CsvLayout::preset(CsvPreset::Google);
    let Ok(reader) = CsvReader::new(data, layout.clone()) else {
        return Ok(0);
    };
    let contacts: Vec<_> = reader.filter_map(Result::ok).map(|(_, c)| c).collect();
    let mut writer = CsvWriter::new(Vec::new(), layout.clone()).map_err(|e| e.to_string())?;
    for c in &contacts {
        writer.write(c).map_err(|e| e.to_string())?;
    }
    let out = writer.finish().map_err(|e| e.to_string())?;
    let again: Vec<_> = CsvReader::new(&out[..], layout)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|(_, c)| c)
        .collect();
    if again != contacts {
        return Err(format!(
            "CSV round trip changed {} contacts into {}",
            contacts.len(),
            again.len()
        ));
    }
    Ok(contacts.len())
}
