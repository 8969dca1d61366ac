//! CSV contacts: Google and Outlook layouts and user-given column mappings, streamed row by row.
//!
//! A [`CsvLayout`] is a list of columns, each naming a property, the parameters it must have
//! (`TEL;TYPE=cell`), which part of the value it holds (a component of `N` or `ADR`, a label)
//! and, through repetition, which occurrence (`E-mail 1`, `E-mail 2`). Reading turns each row
//! into a contact; writing places each property in the first free column group that fits it and
//! counts what did not fit. Cells that a spreadsheet would run as a formula are neutralised.

use std::collections::HashMap;
use std::io::{Read, Write};

use serde::Deserialize;

use crate::model::{Contact, Param, Property, date_to_extended};

/// Why a CSV layout or file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("column mapping: {0}")]
    Mapping(String),
    #[error("CSV line {line}: {reason}")]
    Row { line: u64, reason: String },
    #[error("CSV: {0}")]
    Csv(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl From<::csv::Error> for CsvError {
    fn from(e: ::csv::Error) -> Self {
        let line = e.position().map(|p| p.line());
        let kind = match e.kind() {
            ::csv::ErrorKind::Utf8 { .. } => "text is not valid UTF-8".to_owned(),
            ::csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => {
                format!("row has {len} fields, the header has {expected_len}")
            }
            ::csv::ErrorKind::Io(err) => format!("read error: {}", err.kind()),
            _ => "malformed CSV".to_owned(),
        };
        match line {
            Some(line) => CsvError::Row { line, reason: kind },
            None => CsvError::Csv(kind),
        }
    }
}

/// Built-in layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CsvPreset {
    Google,
    Outlook,
}

impl std::str::FromStr for CsvPreset {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "google" => Ok(CsvPreset::Google),
            "outlook" => Ok(CsvPreset::Outlook),
            other => Err(format!(
                "unknown CSV preset {other:?}: expected google or outlook"
            )),
        }
    }
}

/// Which part of a property a column holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Part {
    /// The whole value as text.
    Value,
    /// One `;` component of a compound value (`N`, `ADR`, `ORG`).
    Component(usize),
    /// The occurrence's label, as a `TYPE` (Google's `E-mail 1 - Label`).
    Label,
    /// A list value joined with this separator (Google's `Labels` uses ` ::: `).
    List(&'static str),
}

/// One CSV column.
#[derive(Debug, Clone)]
pub struct Column {
    pub header: String,
    pub property: String,
    /// Parameters the property must have to land here (and gets when read from here).
    pub params: Vec<Param>,
    pub part: Part,
}

/// A complete layout: delimiter and columns.
#[derive(Debug, Clone)]
pub struct CsvLayout {
    pub delimiter: u8,
    pub columns: Vec<Column>,
}

/// A user-given mapping file (TOML): `delimiter = ";"` and `[columns] "Header" = "TEL;TYPE=cell"`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MappingFile {
    #[serde(default)]
    delimiter: Option<String>,
    columns: toml::Table,
}

impl CsvLayout {
    pub fn preset(preset: CsvPreset) -> Self {
        match preset {
            CsvPreset::Google => google(),
            CsvPreset::Outlook => outlook(),
        }
    }

    /// Parses a mapping file. Targets are `PROP[;PARAM=V…][:PART]`, where PART is a component
    /// name (`N:given`, `ADR:street`, `ORG:unit`) or number; a target named twice is the second
    /// occurrence of that property.
    pub fn from_mapping_toml(text: &str) -> Result<Self, CsvError> {
        let file: MappingFile =
            toml::from_str(text).map_err(|e| CsvError::Mapping(e.message().to_owned()))?;
        let delimiter = match file.delimiter.as_deref() {
            None => b',',
            Some("\\t") | Some("\t") => b'\t',
            Some(d) if d.len() == 1 && d.is_ascii() => d.as_bytes()[0],
            Some(_) => {
                return Err(CsvError::Mapping(
                    "delimiter must be one ASCII character".into(),
                ));
            }
        };
        let mut columns = Vec::new();
        for (header, target) in &file.columns {
            let Some(target) = target.as_str() else {
                return Err(CsvError::Mapping(format!(
                    "column {header:?}: target must be a string"
                )));
            };
            columns.push(parse_target(header, target)?);
        }
        if columns.is_empty() {
            return Err(CsvError::Mapping("no columns mapped".into()));
        }
        Ok(Self { delimiter, columns })
    }

    /// A layout for records that are not CSV rows (a JSON object's fields): `(field, target)`
    /// pairs with the targets of a mapping file.
    pub fn from_targets<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, CsvError> {
        let columns = pairs
            .into_iter()
            .map(|(field, target)| parse_target(field, target))
            .collect::<Result<Vec<_>, _>>()?;
        if columns.is_empty() {
            return Err(CsvError::Mapping("no fields mapped".into()));
        }
        Ok(Self {
            delimiter: b',',
            columns,
        })
    }

    /// One contact from a record given field by field, by the rules of a CSV row:
    /// `field(name, nth)` is the `nth` value of the field (a list's further values are further
    /// occurrences of the property).
    pub fn contact_from_fields<'r>(
        &self,
        field: impl Fn(&str, usize) -> Option<&'r str>,
    ) -> Contact {
        row_to_contact(self, &self.occurrences(), |i, nth| {
            field(&self.columns[i].header, nth)
        })
    }

    pub fn headers(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.header.as_str())
    }

    /// For each column, which occurrence (0, 1, …) of its property group it belongs to.
    fn occurrences(&self) -> Vec<usize> {
        let mut seen: HashMap<(&str, String, &Part), usize> = HashMap::new();
        self.columns
            .iter()
            .map(|c| {
                let n = seen
                    .entry((&c.property, params_key(&c.params), &c.part))
                    .or_default();
                *n += 1;
                *n - 1
            })
            .collect()
    }
}

fn params_key(params: &[Param]) -> String {
    params
        .iter()
        .map(|p| format!("{}={}", p.name, p.values.join(",")))
        .collect::<Vec<_>>()
        .join(";")
}

fn parse_target(header: &str, target: &str) -> Result<Column, CsvError> {
    let (head, part) = match target.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (target, None),
    };
    let mut pieces = head.split(';');
    let property = pieces
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_uppercase();
    if property.is_empty()
        || !property
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(CsvError::Mapping(format!(
            "column {header:?}: {target:?} is not a property"
        )));
    }
    let mut params = Vec::new();
    for piece in pieces {
        let Some((k, v)) = piece.split_once('=') else {
            return Err(CsvError::Mapping(format!(
                "column {header:?}: parameter {piece:?} needs NAME=VALUE"
            )));
        };
        params.push(Param {
            name: k.trim().to_ascii_uppercase(),
            values: v.split(',').map(|s| s.trim().to_owned()).collect(),
        });
    }
    let part = match part {
        None => Part::Value,
        Some(p) => Part::Component(component_index(&property, p).ok_or_else(|| {
            CsvError::Mapping(format!("column {header:?}: {property} has no part {p:?}"))
        })?),
    };
    Ok(Column {
        header: header.to_owned(),
        property,
        params,
        part,
    })
}

fn component_index(property: &str, part: &str) -> Option<usize> {
    if let Ok(n) = part.parse::<usize>() {
        return Some(n);
    }
    let names: &[&str] = match property {
        "N" => &["family", "given", "additional", "prefix", "suffix"],
        "ADR" => &[
            "pobox", "extended", "street", "locality", "region", "code", "country",
        ],
        "ORG" => &["name", "unit"],
        _ => &[],
    };
    names.iter().position(|n| n.eq_ignore_ascii_case(part))
}

fn col(header: &str, property: &str, types: &[&str], part: Part) -> Column {
    let params = if types.is_empty() {
        Vec::new()
    } else {
        vec![Param {
            name: "TYPE".into(),
            values: types.iter().map(|t| (*t).to_owned()).collect(),
        }]
    };
    Column {
        header: header.to_owned(),
        property: property.to_owned(),
        params,
        part,
    }
}

fn google() -> CsvLayout {
    use Part::*;
    let mut c = vec![
        col("First Name", "N", &[], Component(1)),
        col("Middle Name", "N", &[], Component(2)),
        col("Last Name", "N", &[], Component(0)),
        col("Phonetic First Name", "X-PHONETIC-FIRST-NAME", &[], Value),
        col("Phonetic Middle Name", "X-PHONETIC-MIDDLE-NAME", &[], Value),
        col("Phonetic Last Name", "X-PHONETIC-LAST-NAME", &[], Value),
        col("Name Prefix", "N", &[], Component(3)),
        col("Name Suffix", "N", &[], Component(4)),
        col("Nickname", "NICKNAME", &[], Value),
        col("File As", "SORT-STRING", &[], Value),
        col("Organization Name", "ORG", &[], Component(0)),
        col("Organization Title", "TITLE", &[], Value),
        col("Organization Department", "ORG", &[], Component(1)),
        col("Birthday", "BDAY", &[], Value),
        col("Notes", "NOTE", &[], Value),
        col("Photo", "PHOTO", &[], Value),
        col("Labels", "CATEGORIES", &[], List(" ::: ")),
    ];
    for i in 1..=3 {
        c.push(col(&format!("E-mail {i} - Label"), "EMAIL", &[], Label));
        c.push(col(&format!("E-mail {i} - Value"), "EMAIL", &[], Value));
    }
    for i in 1..=4 {
        c.push(col(&format!("Phone {i} - Label"), "TEL", &[], Label));
        c.push(col(&format!("Phone {i} - Value"), "TEL", &[], Value));
    }
    for i in 1..=2 {
        let a = |s: &str| format!("Address {i} - {s}");
        c.push(col(&a("Label"), "ADR", &[], Label));
        c.push(col(&a("Street"), "ADR", &[], Component(2)));
        c.push(col(&a("City"), "ADR", &[], Component(3)));
        c.push(col(&a("PO Box"), "ADR", &[], Component(0)));
        c.push(col(&a("Region"), "ADR", &[], Component(4)));
        c.push(col(&a("Postal Code"), "ADR", &[], Component(5)));
        c.push(col(&a("Country"), "ADR", &[], Component(6)));
        c.push(col(&a("Extended Address"), "ADR", &[], Component(1)));
    }
    for i in 1..=2 {
        c.push(col(&format!("Website {i} - Label"), "URL", &[], Label));
        c.push(col(&format!("Website {i} - Value"), "URL", &[], Value));
    }
    CsvLayout {
        delimiter: b',',
        columns: c,
    }
}

fn outlook() -> CsvLayout {
    use Part::*;
    let mut c = vec![
        col("First Name", "N", &[], Component(1)),
        col("Middle Name", "N", &[], Component(2)),
        col("Last Name", "N", &[], Component(0)),
        col("Title", "N", &[], Component(3)),
        col("Suffix", "N", &[], Component(4)),
        col("Nickname", "NICKNAME", &[], Value),
        col("Given Yomi", "X-PHONETIC-FIRST-NAME", &[], Value),
        col("Surname Yomi", "X-PHONETIC-LAST-NAME", &[], Value),
        col("E-mail Address", "EMAIL", &[], Value),
        col("E-mail 2 Address", "EMAIL", &[], Value),
        col("E-mail 3 Address", "EMAIL", &[], Value),
        col("Home Phone", "TEL", &["home"], Value),
        col("Home Phone 2", "TEL", &["home"], Value),
        col("Business Phone", "TEL", &["work"], Value),
        col("Business Phone 2", "TEL", &["work"], Value),
        col("Mobile Phone", "TEL", &["cell"], Value),
        col("Other Phone", "TEL", &[], Value),
        col("Business Fax", "TEL", &["work", "fax"], Value),
        col("Home Fax", "TEL", &["home", "fax"], Value),
        col("Pager", "TEL", &["pager"], Value),
        col("Job Title", "TITLE", &[], Value),
        col("Department", "ORG", &[], Component(1)),
        col("Company", "ORG", &[], Component(0)),
    ];
    for (prefix, ty) in [("Business", "work"), ("Home", "home"), ("Other", "")] {
        let types: &[&str] = if ty.is_empty() { &[] } else { &[ty] };
        c.push(col(&format!("{prefix} Street"), "ADR", types, Component(2)));
        c.push(col(&format!("{prefix} City"), "ADR", types, Component(3)));
        c.push(col(&format!("{prefix} State"), "ADR", types, Component(4)));
        c.push(col(
            &format!("{prefix} Postal Code"),
            "ADR",
            types,
            Component(5),
        ));
        c.push(col(
            &format!("{prefix} Country/Region"),
            "ADR",
            types,
            Component(6),
        ));
    }
    c.extend([
        col("Web Page", "URL", &[], Value),
        col("Birthday", "BDAY", &[], Value),
        col("Anniversary", "ANNIVERSARY", &[], Value),
        col("Notes", "NOTE", &[], Value),
        col("Categories", "CATEGORIES", &[], List(";")),
    ]);
    CsvLayout {
        delimiter: b',',
        columns: c,
    }
}

/// A row that could not become a contact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedRow {
    pub line: u64,
    pub reason: String,
}

/// Streams contacts out of CSV input laid out as `layout`. Unknown headers are ignored; a
/// layout column missing from the file is empty.
#[derive(Debug)]
pub struct CsvReader<R: Read> {
    inner: ::csv::Reader<R>,
    layout: CsvLayout,
    /// For each layout column, its position in the file.
    positions: Vec<Option<usize>>,
    occurrences: Vec<usize>,
    record: ::csv::StringRecord,
}

impl<R: Read> CsvReader<R> {
    pub fn new(src: R, layout: CsvLayout) -> Result<Self, CsvError> {
        let mut inner = ::csv::ReaderBuilder::new()
            .delimiter(layout.delimiter)
            .flexible(true)
            .from_reader(src);
        let headers = inner.headers()?.clone();
        let find = |h: &str| {
            headers.iter().position(|f| {
                f.trim_start_matches('\u{feff}')
                    .trim()
                    .eq_ignore_ascii_case(h)
            })
        };
        let positions: Vec<_> = layout.columns.iter().map(|c| find(&c.header)).collect();
        if positions.iter().all(Option::is_none) {
            return Err(CsvError::Mapping(
                "none of the layout's columns is in the file's header row".into(),
            ));
        }
        let occurrences = layout.occurrences();
        Ok(Self {
            inner,
            layout,
            positions,
            occurrences,
            record: ::csv::StringRecord::new(),
        })
    }

    /// The next contact, a rejected row, or `None` at the end.
    pub fn next_contact(&mut self) -> Option<Result<(u64, Contact), RejectedRow>> {
        loop {
            match self.inner.read_record(&mut self.record) {
                Ok(false) => return None,
                Ok(true) => {
                    let line = self.record.position().map(|p| p.line()).unwrap_or(0);
                    let (positions, record) = (&self.positions, &self.record);
                    let contact = row_to_contact(&self.layout, &self.occurrences, |i, nth| {
                        if nth == 0 {
                            positions[i].and_then(|p| record.get(p))
                        } else {
                            None
                        }
                    });
                    if contact.properties().is_empty() {
                        continue; // an empty row
                    }
                    return Some(Ok((line, contact)));
                }
                Err(e) => {
                    let line = e.position().map(|p| p.line()).unwrap_or(0);
                    let reason = match CsvError::from(e) {
                        CsvError::Row { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    return Some(Err(RejectedRow { line, reason }));
                }
            }
        }
    }
}

impl<R: Read> Iterator for CsvReader<R> {
    type Item = Result<(u64, Contact), RejectedRow>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_contact()
    }
}

/// Undoes the formula guard the writer adds (`'=…` back to `=…`).
fn unguard(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if rest.starts_with(FORMULA_STARTS) => rest,
        _ => cell,
    }
}

const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

#[derive(Default)]
struct Pending {
    text: Option<String>,
    components: Vec<(usize, String)>,
    label: Option<String>,
    list: Vec<String>,
}

/// One contact from a record: `cell(column, nth)` is the column's `nth` value (a CSV cell has
/// one; a JSON field may hold a list), each further value another occurrence of the property.
fn row_to_contact<'r>(
    layout: &CsvLayout,
    occurrences: &[usize],
    cell: impl Fn(usize, usize) -> Option<&'r str>,
) -> Contact {
    // Keyed by the group a column belongs to, in column order. Occurrences count per part, so
    // the first street and the first city belong to the same address.
    type Group<'a> = ((&'a str, String, usize, usize), &'a [Param], Pending);
    let mut groups: Vec<Group<'_>> = Vec::new();
    for (i, column) in layout.columns.iter().enumerate() {
        for nth in 0.. {
            let Some(cell) = cell(i, nth) else {
                break;
            };
            let cell = unguard(cell.trim());
            if cell.is_empty() {
                continue;
            }
            let key = (
                column.property.as_str(),
                params_key(&column.params),
                occurrences[i],
                nth,
            );
            let at = match groups.iter().position(|(k, _, _)| *k == key) {
                Some(at) => at,
                None => {
                    groups.push((key, &column.params, Pending::default()));
                    groups.len() - 1
                }
            };
            let pending = &mut groups[at].2;
            match &column.part {
                Part::Value => pending.text = Some(cell.to_owned()),
                Part::Component(n) => pending.components.push((*n, cell.to_owned())),
                Part::Label => pending.label = Some(cell.to_owned()),
                Part::List(sep) => pending.list.extend(
                    cell.split(sep)
                        .map(|s| s.trim().trim_start_matches("* ").trim().to_owned()),
                ),
            }
        }
    }
    let mut contact = Contact::new();
    for ((property, _, _, _), column_params, pending) in groups {
        let mut params = column_params.to_vec();
        if let Some(label) = &pending.label {
            params.extend(label_to_params(label));
        }
        let mut p = if !pending.components.is_empty() {
            let width = pending
                .components
                .iter()
                .map(|(n, _)| n + 1)
                .max()
                .unwrap_or(1)
                .max(match property {
                    "N" => 5,
                    "ADR" => 7,
                    _ => 1,
                });
            let mut parts = vec![String::new(); width];
            for (n, v) in pending.components {
                parts[n] = v;
            }
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            let mut p = Property::compound(property, &refs);
            if property == "ORG" {
                while p.value.ends_with(';') {
                    p.value.pop();
                }
            }
            p
        } else if !pending.list.is_empty() {
            let items: Vec<String> = pending
                .list
                .iter()
                .filter(|s| !s.is_empty())
                .map(|s| crate::model::escape_text(s, true))
                .collect();
            if items.is_empty() {
                continue;
            }
            Property::new(property, Vec::new(), &items.join(","))
        } else if let Some(text) = pending.text {
            Property::text(property, &text)
        } else {
            continue;
        };
        crate::model::canonicalize_params(&p.name, &mut params);
        p.params = params;
        let value = crate::model::canonical_value(&p.name, &p.params, &p.value);
        p.value = value;
        contact.push(p);
    }
    if contact.first("FN").is_none()
        && !contact.properties().is_empty()
        && let Some(fn_) = derived_formatted_name(&contact)
    {
        contact
            .properties_mut()
            .insert(0, Property::text("FN", &fn_));
    }
    contact
}

/// A display name from `N`, else `ORG`, else the first email: CSV layouts rarely carry `FN`.
pub fn derived_formatted_name(contact: &Contact) -> Option<String> {
    if let Some(n) = contact.name() {
        let parts: Vec<&str> = [&n.prefixes, &n.given, &n.additional, &n.family, &n.suffixes]
            .into_iter()
            .map(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .collect();
        if !parts.is_empty() {
            return Some(parts.join(" "));
        }
    }
    if let Some(org) = contact
        .organization()
        .and_then(|o| o.into_iter().next())
        .filter(|o| !o.is_empty())
    {
        return Some(org);
    }
    contact.emails().into_iter().next()
}

/// Google labels: `Mobile` → `cell`, `* Home` → `home` + preferred.
fn label_to_params(label: &str) -> Vec<Param> {
    let (preferred, label) = match label.strip_prefix("* ") {
        Some(rest) => (true, rest),
        None => (false, label),
    };
    let ty = label.trim().to_lowercase();
    let mut out = Vec::new();
    if preferred || ty == "pref" {
        out.push(Param::new("PREF", "1"));
    }
    match ty.as_str() {
        "mobile" => out.push(Param::new("TYPE", "cell")),
        // Not labels a person gives: vCard's transport types.
        "" | "pref" | "internet" | "voice" => {}
        other => out.push(Param::new("TYPE", other)),
    }
    out
}

/// The label for a property: its first `TYPE` that names a place or kind, as Google writes it.
fn params_to_label(p: &Property) -> String {
    let ty = p
        .param_values("TYPE")
        .map(str::to_lowercase)
        .find(|t| !matches!(t.as_str(), "pref" | "internet" | "voice" | ""));
    let label = match ty.as_deref() {
        Some("cell") => "Mobile".to_owned(),
        Some(t) => {
            // ASCII only: `ß` upper-cases to `SS`, which would not read back.
            let mut label = t.to_owned();
            if let Some(first) = label.get_mut(0..1) {
                first.make_ascii_uppercase();
            }
            label
        }
        None => String::new(),
    };
    // Whole values only: a label read from CSV may itself contain commas.
    let preferred = p.param_values("PREF").any(|v| v.trim() == "1")
        || p.param_values("TYPE")
            .any(|v| v.eq_ignore_ascii_case("pref"));
    if preferred {
        format!("* {label}")
    } else {
        label
    }
}

/// Streams contacts into CSV laid out as `layout`.
#[derive(Debug)]
pub struct CsvWriter<W: Write> {
    inner: ::csv::Writer<W>,
    layout: CsvLayout,
    occurrences: Vec<usize>,
    /// Property values that had no free column (CSV cannot carry everything).
    pub dropped_values: u64,
    row: Vec<String>,
}

impl<W: Write> CsvWriter<W> {
    pub fn new(dst: W, layout: CsvLayout) -> Result<Self, CsvError> {
        let mut inner = ::csv::WriterBuilder::new()
            .delimiter(layout.delimiter)
            .from_writer(dst);
        inner.write_record(layout.headers())?;
        let occurrences = layout.occurrences();
        let width = layout.columns.len();
        Ok(Self {
            inner,
            layout,
            occurrences,
            dropped_values: 0,
            row: vec![String::new(); width],
        })
    }

    pub fn write(&mut self, contact: &Contact) -> Result<(), CsvError> {
        for cell in &mut self.row {
            cell.clear();
        }
        // Column groups in layout order: (property, params key, occurrence) → column indexes.
        let mut groups: Vec<(String, String, usize, Vec<usize>)> = Vec::new();
        for (i, c) in self.layout.columns.iter().enumerate() {
            let key = (
                c.property.clone(),
                params_key(&c.params),
                self.occurrences[i],
            );
            match groups
                .iter_mut()
                .find(|g| (g.0.as_str(), g.1.as_str(), g.2) == (&key.0, &key.1, key.2))
            {
                Some(g) => g.3.push(i),
                None => groups.push((key.0, key.1, key.2, vec![i])),
            }
        }
        let mut used = vec![false; groups.len()];
        for p in contact.properties() {
            let types = p.types();
            // The unused group whose required types this property has, the most specific first;
            // else an unused group that requires none.
            let mut slot: Option<(usize, usize)> = None;
            for (g, group) in groups.iter().enumerate() {
                let column = &self.layout.columns[group.3[0]];
                if used[g] || column.property != p.name {
                    continue;
                }
                let required: Vec<String> = column
                    .params
                    .iter()
                    .filter(|q| q.name == "TYPE")
                    .flat_map(|q| q.values.iter().map(|v| v.to_ascii_lowercase()))
                    .collect();
                if !required.iter().all(|r| types.contains(r)) {
                    continue;
                }
                let score = if required.is_empty() {
                    0
                } else {
                    required.len() + 1
                };
                if slot.is_none_or(|(_, best)| score > best) {
                    slot = Some((g, score));
                }
            }
            let slot = slot.map(|(g, _)| g);
            let Some(g) = slot else {
                if self.layout.columns.iter().any(|c| c.property == p.name) {
                    self.dropped_values += 1;
                }
                continue;
            };
            used[g] = true;
            for &ci in &groups[g].3 {
                let cell = match &self.layout.columns[ci].part {
                    Part::Value => {
                        let text = p.text_value();
                        if matches!(p.name.as_str(), "BDAY" | "ANNIVERSARY") {
                            date_to_extended(&text).unwrap_or(text)
                        } else {
                            text
                        }
                    }
                    Part::Component(n) => p.components().into_iter().nth(*n).unwrap_or_default(),
                    Part::Label => params_to_label(p),
                    Part::List(sep) => p.list().join(sep),
                };
                self.row[ci] = guard(cell);
            }
        }
        self.inner.write_record(&self.row)?;
        Ok(())
    }

    pub fn finish(mut self) -> Result<W, CsvError> {
        self.inner.flush()?;
        self.inner
            .into_inner()
            .map_err(|e| CsvError::Io(std::io::Error::other(e.error().to_string())))
    }
}

/// Neutralises spreadsheet formula injection: a cell starting with `=`, `+`, `-`, `@`, TAB or
/// CR gets a leading `'` (the reader removes it again).
fn guard(cell: String) -> String {
    if cell.starts_with(FORMULA_STARTS)
        || (cell.starts_with('\'') && cell[1..].starts_with(FORMULA_STARTS))
    {
        format!("'{cell}")
    } else {
        cell
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(layout: CsvLayout, text: &str) -> Vec<Contact> {
        CsvReader::new(text.as_bytes(), layout)
            .unwrap()
            .map(|r| r.unwrap().1)
            .collect()
    }

    fn write(layout: CsvLayout, contacts: &[Contact]) -> String {
        let mut w = CsvWriter::new(Vec::new(), layout).unwrap();
        for c in contacts {
            w.write(c).unwrap();
        }
        String::from_utf8(w.finish().unwrap()).unwrap()
    }

    #[test]
    fn google_round_trip() {
        let text = "First Name,Last Name,E-mail 1 - Label,E-mail 1 - Value,Phone 1 - Label,Phone 1 - Value,Address 1 - Label,Address 1 - Street,Address 1 - City,Labels,Notes\n\
            Anna,Müller,* Work,anna@example.com,Mobile,+49 30 123,Home,Hauptstr. 1,Berlin,* myContacts ::: Friends,\"line1\nline2, with comma\"\n";
        let contacts = read(CsvLayout::preset(CsvPreset::Google), text);
        assert_eq!(contacts.len(), 1);
        let c = &contacts[0];
        assert_eq!(c.formatted_name().as_deref(), Some("Anna Müller"));
        assert_eq!(c.first("EMAIL").unwrap().types(), vec!["work"]);
        assert!(c.first("EMAIL").unwrap().is_preferred());
        assert_eq!(c.first("TEL").unwrap().types(), vec!["cell"]);
        assert_eq!(c.addresses()[0].locality, "Berlin");
        assert_eq!(c.categories(), vec!["myContacts", "Friends"]);
        assert_eq!(c.note().as_deref(), Some("line1\nline2, with comma"));
        let written = write(CsvLayout::preset(CsvPreset::Google), &contacts);
        let again = read(CsvLayout::preset(CsvPreset::Google), &written);
        assert_eq!(again, contacts);
    }

    #[test]
    fn formula_injection_is_neutralised_and_undone() {
        let mut c = Contact::new();
        c.push(Property::text("FN", "=HYPERLINK(\"http://evil\")"));
        c.push(Property::text("NOTE", "@SUM(A1)"));
        let layout =
            CsvLayout::from_mapping_toml("[columns]\nName = \"FN\"\nNote = \"NOTE\"").unwrap();
        let text = write(layout.clone(), &[c.clone()]);
        for line in text.lines().skip(1) {
            for cell in line.split(',') {
                let cell = cell.trim_start_matches('"');
                assert!(!cell.starts_with(['=', '+', '-', '@']), "{line}");
            }
        }
        assert_eq!(read(layout, &text), vec![c]);
    }

    #[test]
    fn outlook_typed_columns() {
        let text = "First Name,Last Name,Home Phone,Mobile Phone,Business Fax,Company,Department\nJo,Doe,111,222,333,ACME,Sales\n";
        let contacts = read(CsvLayout::preset(CsvPreset::Outlook), text);
        let c = &contacts[0];
        let tels: Vec<_> = c.all("TEL").map(|t| t.types()).collect();
        assert_eq!(tels, vec![vec!["home"], vec!["cell"], vec!["work", "fax"]]);
        assert_eq!(
            c.organization(),
            Some(vec!["ACME".to_owned(), "Sales".to_owned()])
        );
        let again = read(
            CsvLayout::preset(CsvPreset::Outlook),
            &write(CsvLayout::preset(CsvPreset::Outlook), &contacts),
        );
        assert_eq!(again, contacts);
    }

    #[test]
    fn mapping_errors_are_clear() {
        assert!(CsvLayout::from_mapping_toml("[columns]\nA = \"N:nope\"").is_err());
        assert!(CsvLayout::from_mapping_toml("delimiter = \";;\"\n[columns]\nA = \"FN\"").is_err());
        assert!(CsvLayout::from_mapping_toml("[columns]\nA = \"TEL;TYPE\"").is_err());
        assert!(CsvLayout::from_mapping_toml("colums = 1").is_err());
    }
}
