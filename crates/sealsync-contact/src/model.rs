//! The canonical contact: vCard 4.0 (RFC 6350) semantics, kept lossless.
//!
//! A [`Contact`] is an ordered list of [`Property`] values. Every property keeps its group, its
//! parameters in order and its value, so that unknown and `X-` properties survive any number of
//! read → write → read cycles. Values are held in one canonical escaped form per value kind
//! (see [`ValueKind`]): whatever dialect a card was read from, the same person gives the same
//! model, and the codecs can be checked against each other.
//!
//! Invariants: property and parameter names are upper case; a value never holds a raw CR or LF
//! (newlines in text are the escape `\n`).

use std::fmt;

/// One person (or organisation): the properties of one vCard, without `BEGIN`, `END`, `VERSION`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Contact {
    properties: Vec<Property>,
}

impl Contact {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn from_properties(properties: Vec<Property>) -> Self {
        Self { properties }
    }

    pub fn properties(&self) -> &[Property] {
        &self.properties
    }

    pub fn properties_mut(&mut self) -> &mut Vec<Property> {
        &mut self.properties
    }

    pub fn into_properties(self) -> Vec<Property> {
        self.properties
    }

    pub fn push(&mut self, property: Property) {
        self.properties.push(property);
    }

    /// Removes every property called `name` (case-insensitive); returns how many went.
    pub fn remove_all(&mut self, name: &str) -> usize {
        let before = self.properties.len();
        self.properties
            .retain(|p| !p.name.eq_ignore_ascii_case(name));
        before - self.properties.len()
    }

    /// Replaces every property called `name` with one text property, or removes them for `None`.
    pub fn set_text(&mut self, name: &str, text: Option<&str>) {
        // The new value takes the place of the first old one; the others go.
        let at = self
            .properties
            .iter()
            .position(|p| p.name.eq_ignore_ascii_case(name));
        self.remove_all(name);
        if let Some(t) = text {
            let at = at
                .unwrap_or(self.properties.len())
                .min(self.properties.len());
            self.properties.insert(at, Property::text(name, t));
        }
    }

    /// The first property called `name` (case-insensitive).
    pub fn first(&self, name: &str) -> Option<&Property> {
        self.properties
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Every property called `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Property> + 'a {
        self.properties
            .iter()
            .filter(move |p| p.name.eq_ignore_ascii_case(name))
    }

    /// `FN`: the name to show.
    pub fn formatted_name(&self) -> Option<String> {
        self.first("FN").map(Property::text_value)
    }

    /// `N`: family, given, additional, prefixes, suffixes.
    pub fn name(&self) -> Option<StructuredName> {
        self.first("N").map(|p| {
            let mut c = p.components().into_iter();
            let mut next = || c.next().unwrap_or_default();
            StructuredName {
                family: next(),
                given: next(),
                additional: next(),
                prefixes: next(),
                suffixes: next(),
            }
        })
    }

    pub fn emails(&self) -> Vec<String> {
        self.all("EMAIL").map(Property::text_value).collect()
    }

    pub fn phones(&self) -> Vec<String> {
        self.all("TEL").map(Property::text_value).collect()
    }

    pub fn addresses(&self) -> Vec<Address> {
        self.all("ADR").map(Address::from_property).collect()
    }

    /// `ORG`: organisation name followed by units.
    pub fn organization(&self) -> Option<Vec<String>> {
        self.first("ORG").map(Property::components)
    }

    pub fn title(&self) -> Option<String> {
        self.first("TITLE").map(Property::text_value)
    }

    pub fn birthday(&self) -> Option<String> {
        self.first("BDAY").map(Property::text_value)
    }

    pub fn note(&self) -> Option<String> {
        self.first("NOTE").map(Property::text_value)
    }

    pub fn urls(&self) -> Vec<String> {
        self.all("URL").map(|p| p.value.clone()).collect()
    }

    /// `PHOTO`: a URI, usually a `data:` URI holding the image.
    pub fn photo(&self) -> Option<&str> {
        self.first("PHOTO").map(|p| p.value.as_str())
    }

    pub fn categories(&self) -> Vec<String> {
        self.all("CATEGORIES").flat_map(Property::list).collect()
    }

    pub fn uid(&self) -> Option<String> {
        self.first("UID").map(Property::text_value)
    }

    pub fn revision(&self) -> Option<&str> {
        self.first("REV").map(|p| p.value.as_str())
    }

    /// `KIND`: individual (the default), group, org or location.
    pub fn kind(&self) -> String {
        self.first("KIND")
            .map(|p| p.text_value().to_ascii_lowercase())
            .unwrap_or_else(|| "individual".to_owned())
    }

    /// A short label for messages that must not reveal contact data: the property count.
    pub fn describe_redacted(&self) -> String {
        format!("contact with {} properties", self.properties.len())
    }
}

/// Contact data never reaches logs: `Debug` shows the shape, not the values.
impl fmt::Debug for Contact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.properties.iter()).finish()
    }
}

/// One content line: `group.NAME;PARAM=value:value`.
#[derive(Clone, PartialEq, Eq)]
pub struct Property {
    pub group: Option<String>,
    /// Upper case.
    pub name: String,
    pub params: Vec<Param>,
    /// Canonical escaped form for the value's kind; never holds a raw CR or LF.
    pub value: String,
}

impl Property {
    /// A property from an already escaped value, canonicalised for its kind.
    pub fn new(name: &str, params: Vec<Param>, raw_value: &str) -> Self {
        let name = name.to_ascii_uppercase();
        let value = canonical_value(&name, &params, raw_value);
        Self {
            group: None,
            name,
            params,
            value,
        }
    }

    /// A property holding `text` (escaped as its kind wants).
    pub fn text(name: &str, text: &str) -> Self {
        let name = name.to_ascii_uppercase();
        let value = match value_kind(&name, &[]) {
            ValueKind::Text => escape_text(text, false),
            ValueKind::List => escape_text(text, false),
            ValueKind::Compound { .. } => escape_text(text, true),
            ValueKind::Date | ValueKind::Raw => {
                text.replace("\r\n", "\\n").replace(['\r', '\n'], "\\n")
            }
        };
        Self {
            group: None,
            name,
            params: Vec::new(),
            value,
        }
    }

    /// A compound property (`N`, `ADR`, `ORG`, …) from its components.
    pub fn compound(name: &str, components: &[&str]) -> Self {
        let value = components
            .iter()
            .map(|c| escape_text(c, true))
            .collect::<Vec<_>>()
            .join(";");
        Self {
            group: None,
            name: name.to_ascii_uppercase(),
            params: Vec::new(),
            value,
        }
    }

    pub fn with_param(mut self, name: &str, value: &str) -> Self {
        self.params.push(Param::new(name, value));
        self
    }

    pub fn with_group(mut self, group: &str) -> Self {
        self.group = Some(group.to_owned());
        self
    }

    /// The value as text: escapes undone (`\n` becomes a newline). For compound values the
    /// unescaped components are joined by `;`.
    pub fn text_value(&self) -> String {
        match value_kind(&self.name, &self.params) {
            ValueKind::Text | ValueKind::List => unescape(&self.value),
            ValueKind::Compound { .. } => self.components().join(";"),
            ValueKind::Date | ValueKind::Raw => self.value.clone(),
        }
    }

    /// The `;`-separated components of a compound value, unescaped.
    pub fn components(&self) -> Vec<String> {
        split_unescaped(&self.value, ';')
            .into_iter()
            .map(unescape)
            .collect()
    }

    /// The `,`-separated values of a list value, unescaped.
    pub fn list(&self) -> Vec<String> {
        split_unescaped(&self.value, ',')
            .into_iter()
            .map(unescape)
            .collect()
    }

    /// Values of every parameter called `name`.
    pub fn param_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.params
            .iter()
            .filter(move |p| p.name.eq_ignore_ascii_case(name))
            .flat_map(|p| p.values.iter().map(String::as_str))
    }

    /// `TYPE` values, lower case, with comma lists inside one value split apart.
    pub fn types(&self) -> Vec<String> {
        self.param_values("TYPE")
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_ascii_lowercase())
            .filter(|v| !v.is_empty())
            .collect()
    }

    pub fn has_type(&self, ty: &str) -> bool {
        self.types().iter().any(|t| t.eq_ignore_ascii_case(ty))
    }

    /// Preferred by `PREF=1` (4.0) or `TYPE=pref` (2.1/3.0).
    pub fn is_preferred(&self) -> bool {
        self.param_values("PREF").any(|v| v.trim() == "1") || self.has_type("pref")
    }
}

impl fmt::Debug for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Property");
        if let Some(g) = &self.group {
            d.field("group", g);
        }
        d.field("name", &self.name)
            .field(
                "params",
                &self
                    .params
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("value", &format_args!("<{} bytes>", self.value.len()))
            .finish()
    }
}

/// A parameter: upper-case name and its values (RFC 6868 caret escapes undone).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Param {
    pub name: String,
    pub values: Vec<String>,
}

impl Param {
    pub fn new(name: &str, value: &str) -> Self {
        Self {
            name: name.to_ascii_uppercase(),
            values: vec![value.to_owned()],
        }
    }
}

/// `N` split into its five components.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StructuredName {
    pub family: String,
    pub given: String,
    pub additional: String,
    pub prefixes: String,
    pub suffixes: String,
}

/// `ADR` split into its seven components, with its types.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Address {
    pub types: Vec<String>,
    pub po_box: String,
    pub extended: String,
    pub street: String,
    pub locality: String,
    pub region: String,
    pub postal_code: String,
    pub country: String,
}

impl Address {
    fn from_property(p: &Property) -> Self {
        let mut c = p.components().into_iter();
        let mut next = || c.next().unwrap_or_default();
        Address {
            types: p.types(),
            po_box: next(),
            extended: next(),
            street: next(),
            locality: next(),
            region: next(),
            postal_code: next(),
            country: next(),
        }
    }

    /// The `ADR` property for this address.
    pub fn to_property(&self) -> Property {
        let mut p = Property::compound(
            "ADR",
            &[
                &self.po_box,
                &self.extended,
                &self.street,
                &self.locality,
                &self.region,
                &self.postal_code,
                &self.country,
            ],
        );
        if !self.types.is_empty() {
            p.params.push(Param {
                name: "TYPE".into(),
                values: self.types.clone(),
            });
        }
        p
    }

    pub fn is_empty(&self) -> bool {
        [
            &self.po_box,
            &self.extended,
            &self.street,
            &self.locality,
            &self.region,
            &self.postal_code,
            &self.country,
        ]
        .iter()
        .all(|s| s.is_empty())
    }
}

/// How a property's value is escaped and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// One text value: `\\`, `\,` and `\n` escaped.
    Text,
    /// A comma-separated list of text values (`CATEGORIES`, `NICKNAME`).
    List,
    /// `;`-separated components; `lists` says whether components are comma lists themselves.
    Compound { lists: bool },
    /// A date, time or timestamp: held in the basic ISO 8601 form vCard 4.0 uses.
    Date,
    /// URIs and unknown properties: kept exactly as written.
    Raw,
}

/// The kind of value `name` carries, given its parameters (`VALUE=` can change it).
pub fn value_kind(name: &str, params: &[Param]) -> ValueKind {
    let value_param = params
        .iter()
        .find(|p| p.name == "VALUE")
        .and_then(|p| p.values.first())
        .map(|v| v.to_ascii_lowercase());
    match name {
        "FN" | "NOTE" | "TITLE" | "ROLE" | "EMAIL" | "KIND" | "LABEL" | "MAILER" | "PRODID"
        | "SORT-STRING" | "CLASS" => ValueKind::Text,
        "TEL" if value_param.as_deref() != Some("uri") => ValueKind::Text,
        "CATEGORIES" | "NICKNAME" => ValueKind::List,
        "N" | "ADR" => ValueKind::Compound { lists: true },
        "ORG" | "GENDER" | "CLIENTPIDMAP" => ValueKind::Compound { lists: false },
        "BDAY" | "ANNIVERSARY" | "REV" | "DEATHDATE" if value_param.as_deref() != Some("text") => {
            ValueKind::Date
        }
        _ => ValueKind::Raw,
    }
}

/// The jCard value type a property has when no `VALUE` parameter says otherwise.
pub fn default_value_type(name: &str) -> &'static str {
    match name {
        "FN" | "N" | "NICKNAME" | "NOTE" | "TITLE" | "ROLE" | "ORG" | "CATEGORIES" | "ADR"
        | "EMAIL" | "KIND" | "GENDER" | "LABEL" | "PRODID" | "TEL" | "TZ" | "MAILER"
        | "SORT-STRING" | "CLASS" | "CLIENTPIDMAP" => "text",
        "SOURCE" | "PHOTO" | "LOGO" | "SOUND" | "URL" | "KEY" | "FBURL" | "CALADRURI"
        | "CALURI" | "MEMBER" | "RELATED" | "GEO" | "IMPP" | "UID" => "uri",
        "BDAY" | "ANNIVERSARY" | "DEATHDATE" => "date-and-or-time",
        "REV" => "timestamp",
        "LANG" => "language-tag",
        _ => "unknown",
    }
}

/// Puts parameters in canonical shape: one entry per name (values of repeated names joined in
/// order), sorted by name, and no `VALUE` that only restates the property's default type.
/// Parameter order carries no meaning in vCard or jCard; a fixed order lets every codec give
/// back the same contact.
pub fn canonicalize_params(name: &str, params: &mut Vec<Param>) {
    let default = default_value_type(name);
    for p in params.iter_mut().filter(|p| p.name == "VALUE") {
        for v in &mut p.values {
            v.make_ascii_lowercase();
        }
    }
    params.retain(|p| {
        !(p.name == "VALUE" && p.values.len() == 1 && p.values[0].eq_ignore_ascii_case(default))
    });
    if params.len() < 2 {
        return;
    }
    params.sort_by(|a, b| a.name.cmp(&b.name));
    let mut merged: Vec<Param> = Vec::with_capacity(params.len());
    for p in params.drain(..) {
        match merged.last_mut() {
            Some(last) if last.name == p.name => last.values.extend(p.values),
            _ => merged.push(p),
        }
    }
    *params = merged;
}

/// The canonical form of `raw` (as found after unfolding) for a property's kind.
pub fn canonical_value(name: &str, params: &[Param], raw: &str) -> String {
    let kind = value_kind(name, params);
    // Most values are already canonical: nothing to unescape, nothing that needs escaping.
    let already = match kind {
        ValueKind::Text | ValueKind::Compound { lists: false } => {
            !raw.contains(['\\', ',', '\r', '\n'])
        }
        ValueKind::List => !raw.contains(['\\', ';', '\r', '\n']),
        ValueKind::Compound { lists: true } => !raw.contains(['\\', '\r', '\n']),
        ValueKind::Date => !raw.contains(['-', ':', '\r', '\n']),
        ValueKind::Raw => !raw.contains(['\r', '\n']),
    };
    if already {
        return raw.to_owned();
    }
    match kind {
        ValueKind::Text => escape_text(&unescape(raw), false),
        ValueKind::List => join_list(split_unescaped(raw, ',').into_iter().map(unescape)),
        ValueKind::Compound { lists } => split_unescaped(raw, ';')
            .into_iter()
            .map(|component| {
                if lists {
                    join_list(split_unescaped(component, ',').into_iter().map(unescape))
                } else {
                    escape_text(&unescape(component), true)
                }
            })
            .collect::<Vec<_>>()
            .join(";"),
        ValueKind::Date => date_to_basic(raw).unwrap_or_else(|| newlines_escaped(raw)),
        ValueKind::Raw => newlines_escaped(raw),
    }
}

fn join_list(items: impl Iterator<Item = String>) -> String {
    items
        .map(|i| escape_text(&i, true))
        .collect::<Vec<_>>()
        .join(",")
}

fn newlines_escaped(raw: &str) -> String {
    if raw.contains(['\r', '\n']) {
        raw.replace("\r\n", "\\n").replace(['\r', '\n'], "\\n")
    } else {
        raw.to_owned()
    }
}

/// Escapes text for a vCard value: backslash, comma and newline always; semicolon too inside
/// compound values and lists.
pub fn escape_text(text: &str, semicolon: bool) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            ',' => out.push_str("\\,"),
            ';' if semicolon => out.push_str("\\;"),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\\n");
            }
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes vCard escapes: `\n`/`\N` to newline, `\\`, `\,`, `\;`; other escapes keep the character.
pub fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n' | 'N') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits on `sep` where it is not escaped by a backslash.
pub fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

/// `1985-04-12` → `19850412`, `--04-12` → `--0412`, `2024-01-01T12:00:00Z` → `20240101T120000Z`.
/// `None` when `s` is not in the extended form (then it is kept as written).
pub fn date_to_basic(s: &str) -> Option<String> {
    if !s.is_ascii() {
        return None;
    }
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let date = match date.as_bytes() {
        [y1, y2, y3, y4, b'-', m1, m2, b'-', d1, d2]
            if [y1, y2, y3, y4, m1, m2, d1, d2]
                .iter()
                .all(|b| b.is_ascii_digit()) =>
        {
            format!("{}{}{}", &date[0..4], &date[5..7], &date[8..10])
        }
        [b'-', b'-', m1, m2, b'-', d1, d2]
            if [m1, m2, d1, d2].iter().all(|b| b.is_ascii_digit()) =>
        {
            format!("--{}{}", &date[2..4], &date[5..7])
        }
        [] if time.is_some() => String::new(),
        _ => return None,
    };
    match time {
        None => Some(date),
        Some(t) => time_to_basic(t).map(|t| format!("{date}T{t}")),
    }
}

fn time_to_basic(t: &str) -> Option<String> {
    let b = t.as_bytes();
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    let digits = [b[0], b[1], b[3], b[4], b[6], b[7]];
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let zone = match &t[8..] {
        "" => String::new(),
        "Z" => "Z".to_owned(),
        z if z.len() == 6
            && (z.starts_with('+') || z.starts_with('-'))
            && z.as_bytes()[3] == b':'
            && z[1..3]
                .bytes()
                .chain(z[4..6].bytes())
                .all(|c| c.is_ascii_digit()) =>
        {
            format!("{}{}{}", &z[0..1], &z[1..3], &z[4..6])
        }
        _ => return None,
    };
    Some(format!("{}{}{}{}", &t[0..2], &t[3..5], &t[6..8], zone))
}

/// The inverse of [`date_to_basic`], for jCard which uses the extended form.
pub fn date_to_extended(s: &str) -> Option<String> {
    if !s.is_ascii() {
        return None;
    }
    let (date, time) = match s.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let all_digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
    let date = if date.len() == 8 && all_digits(date) {
        format!("{}-{}-{}", &date[0..4], &date[4..6], &date[6..8])
    } else if date.len() == 6 && date.starts_with("--") && all_digits(&date[2..]) {
        format!("--{}-{}", &date[2..4], &date[4..6])
    } else if date.is_empty() && time.is_some() {
        String::new()
    } else {
        return None;
    };
    let Some(t) = time else { return Some(date) };
    if t.len() < 6 || !all_digits(&t[..6]) {
        return None;
    }
    let zone = match &t[6..] {
        "" => String::new(),
        "Z" => "Z".to_owned(),
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) && all_digits(&z[1..]) => {
            format!("{}{}:{}", &z[0..1], &z[1..3], &z[3..5])
        }
        _ => return None,
    };
    Some(format!(
        "{date}T{}:{}:{}{zone}",
        &t[0..2],
        &t[2..4],
        &t[4..6]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips() {
        let text = "a,b;c\\d\nnext";
        assert_eq!(unescape(&escape_text(text, true)), text);
        assert_eq!(escape_text("x;y", false), "x;y");
        assert_eq!(split_unescaped("a\\;b;c", ';'), vec!["a\\;b", "c"]);
    }

    #[test]
    fn canonical_forms_agree_across_dialects() {
        let a = canonical_value("NOTE", &[], "Hello, world\\N again");
        let b = canonical_value("NOTE", &[], "Hello\\, world\\n again");
        assert_eq!(a, b);
        assert_eq!(canonical_value("N", &[], "Doe;John;;;"), "Doe;John;;;");
        assert_eq!(
            canonical_value("ORG", &[], "A, Inc.;Sales"),
            "A\\, Inc.;Sales"
        );
        assert_eq!(canonical_value("BDAY", &[], "1985-04-12"), "19850412");
        assert_eq!(canonical_value("BDAY", &[], "--04-12"), "--0412");
        assert_eq!(
            canonical_value("REV", &[], "2024-01-01T12:00:00Z"),
            "20240101T120000Z"
        );
        assert_eq!(
            canonical_value("X-ANDROID-CUSTOM", &[], "a;b\\,c"),
            "a;b\\,c"
        );
    }

    #[test]
    fn dates_convert_both_ways() {
        for basic in [
            "19850412",
            "--0412",
            "20240101T120000Z",
            "19961022T140000-0500",
            "T102200",
        ] {
            let ext = date_to_extended(basic).unwrap();
            assert_eq!(date_to_basic(&ext).as_deref(), Some(basic), "{ext}");
        }
        assert_eq!(date_to_extended("1985-04"), None);
        assert_eq!(date_to_basic("circa 1800"), None);
    }

    #[test]
    fn typed_accessors() {
        let mut c = Contact::new();
        c.push(Property::new("n", vec![], "Doe;John;Q.;Dr.;Jr."));
        c.push(Property::new(
            "EMAIL",
            vec![Param::new("type", "work")],
            "j@example.com",
        ));
        c.push(Property::new("CATEGORIES", vec![], "a,b\\,c"));
        assert_eq!(c.name().unwrap().given, "John");
        assert_eq!(c.emails(), vec!["j@example.com"]);
        assert_eq!(c.categories(), vec!["a", "b,c"]);
        c.set_text("FN", Some("John Doe"));
        c.set_text("FN", Some("J. Doe"));
        assert_eq!(c.all("FN").count(), 1);
        assert_eq!(c.formatted_name().as_deref(), Some("J. Doe"));
    }

    #[test]
    fn debug_hides_content() {
        let mut c = Contact::new();
        c.push(Property::text("EMAIL", "secret.person@example.com"));
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret.person"), "{shown}");
        assert!(shown.contains("EMAIL"));
    }
}
