//! Streaming vCard reader: 2.1, 3.0 and 4.0, several cards per file, bad cards reported and
//! skipped. Memory is bounded by [`Limits`] whatever the input.

use std::io::BufRead;

use base64::Engine as _;

use crate::model::{Contact, Param, Property, canonical_value, canonicalize_params};

/// Bounds that keep a hostile file from exhausting memory. A card over a bound is rejected.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes in one card, folded lines included.
    pub max_card_bytes: usize,
    /// Properties in one card.
    pub max_properties: usize,
    /// Bytes in one physical line.
    pub max_line_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_card_bytes: 8 << 20,
            max_properties: 5_000,
            max_line_bytes: 8 << 20,
        }
    }
}

/// A card that was read, with where it started.
#[derive(Debug, Clone)]
pub struct Card {
    pub contact: Contact,
    /// 1-based line of its `BEGIN:VCARD`.
    pub line: u64,
    /// The `VERSION` it declared, if any.
    pub version: Option<String>,
    /// What was accepted although not quite right (a missing `VERSION`, say).
    pub warnings: Vec<String>,
}

/// A card (or stray text) that could not be read. The reason never quotes contact data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// 1-based line where the problem starts.
    pub line: u64,
    pub reason: String,
}

/// Reads cards from `src` one at a time.
#[derive(Debug)]
pub struct VcardReader<R> {
    src: R,
    limits: Limits,
    /// Number of the last physical line read.
    line_no: u64,
    /// A physical line read ahead while looking for folded continuations.
    peeked: Option<(u64, Vec<u8>, bool)>,
    eof: bool,
    first_line: bool,
    /// Inside a run of text outside any card (reported once per run).
    in_stray_text: bool,
    /// A logical line given back to be read again (a `BEGIN:VCARD` that ended a broken card).
    unread: Option<(u64, Vec<u8>, bool)>,
}

enum LineRead {
    Line {
        no: u64,
        bytes: Vec<u8>,
        too_long: bool,
    },
    Eof,
}

impl<R: BufRead> VcardReader<R> {
    pub fn new(src: R) -> Self {
        Self::with_limits(src, Limits::default())
    }

    pub fn with_limits(src: R, limits: Limits) -> Self {
        Self {
            src,
            limits,
            line_no: 0,
            peeked: None,
            eof: false,
            first_line: true,
            in_stray_text: false,
            unread: None,
        }
    }

    /// Reads one physical line without its line ending, keeping at most `max_line_bytes`.
    fn physical_line(&mut self) -> std::io::Result<LineRead> {
        if let Some((no, bytes, too_long)) = self.peeked.take() {
            return Ok(LineRead::Line {
                no,
                bytes,
                too_long,
            });
        }
        if self.eof {
            return Ok(LineRead::Eof);
        }
        let mut bytes = Vec::new();
        let mut too_long = false;
        let mut any = false;
        loop {
            let chunk = self.src.fill_buf()?;
            if chunk.is_empty() {
                self.eof = true;
                break;
            }
            any = true;
            let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            let room = self.limits.max_line_bytes.saturating_sub(bytes.len());
            if take > room {
                too_long = true;
                bytes.extend_from_slice(&chunk[..room]);
            } else {
                bytes.extend_from_slice(&chunk[..take]);
            }
            self.src.consume(take);
            if done {
                break;
            }
        }
        if !any {
            return Ok(LineRead::Eof);
        }
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        if self.first_line {
            self.first_line = false;
            if bytes.starts_with(b"\xEF\xBB\xBF") {
                bytes.drain(..3);
            }
        }
        self.line_no += 1;
        Ok(LineRead::Line {
            no: self.line_no,
            bytes,
            too_long,
        })
    }

    /// Reads one logical line: a physical line with its folded continuations (and
    /// quoted-printable soft line breaks) joined.
    fn logical_line(&mut self) -> std::io::Result<Option<(u64, Vec<u8>, bool)>> {
        if let Some(line) = self.unread.take() {
            return Ok(Some(line));
        }
        let (no, mut line, mut too_long) = match self.physical_line()? {
            LineRead::Eof => return Ok(None),
            LineRead::Line {
                no,
                bytes,
                too_long,
            } => (no, bytes, too_long),
        };
        let quoted_printable = is_quoted_printable(&line);
        loop {
            if quoted_printable && line.last() == Some(&b'=') {
                match self.physical_line()? {
                    LineRead::Eof => break,
                    // A soft line break: the next line goes on unindented. An indented one is
                    // an ordinary fold (handled below), whatever the line ends with.
                    LineRead::Line {
                        bytes, too_long: t, ..
                    } if !matches!(bytes.first(), Some(b' ' | b'\t')) => {
                        line.pop();
                        too_long |= t;
                        line.extend_from_slice(&bytes);
                        continue;
                    }
                    LineRead::Line {
                        no,
                        bytes,
                        too_long: t,
                    } => {
                        self.peeked = Some((no, bytes, t));
                    }
                }
            }
            match self.physical_line()? {
                LineRead::Eof => break,
                LineRead::Line {
                    no: n,
                    bytes,
                    too_long: t,
                } => {
                    if matches!(bytes.first(), Some(b' ' | b'\t')) {
                        too_long |= t;
                        line.extend_from_slice(&bytes[1..]);
                        if line.len() > self.limits.max_card_bytes {
                            too_long = true;
                            line.truncate(self.limits.max_card_bytes);
                        }
                    } else {
                        self.peeked = Some((n, bytes, t));
                        break;
                    }
                }
            }
        }
        Ok(Some((no, line, too_long)))
    }

    /// The next card, a rejected one, or `None` at the end of input.
    pub fn next_card(&mut self) -> Option<Result<Card, Rejected>> {
        // Outside a card: look for BEGIN:VCARD.
        let begin = loop {
            match self.logical_line() {
                Err(e) => return Some(Err(io_rejected(self.line_no, &e))),
                Ok(None) => return None,
                Ok(Some((no, line, _))) => {
                    let trimmed = trim_ascii(&line);
                    if trimmed.is_empty() {
                        continue;
                    }
                    if trimmed.eq_ignore_ascii_case(b"BEGIN:VCARD") {
                        self.in_stray_text = false;
                        break no;
                    }
                    if trimmed.eq_ignore_ascii_case(b"END:VCARD") {
                        return Some(Err(Rejected {
                            line: no,
                            reason: "END:VCARD without a BEGIN:VCARD before it".into(),
                        }));
                    }
                    if !self.in_stray_text {
                        self.in_stray_text = true;
                        return Some(Err(Rejected {
                            line: no,
                            reason: "text outside a card was skipped".into(),
                        }));
                    }
                }
            }
        };
        self.read_card(begin)
    }

    fn read_card(&mut self, begin: u64) -> Option<Result<Card, Rejected>> {
        let mut lines: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut bytes = 0usize;
        let mut oversized = false;
        loop {
            match self.logical_line() {
                Err(e) => return Some(Err(io_rejected(self.line_no, &e))),
                Ok(None) => {
                    return Some(Err(Rejected {
                        line: begin,
                        reason: "the input ends inside this card (no END:VCARD)".into(),
                    }));
                }
                Ok(Some((no, line, too_long))) => {
                    let trimmed = trim_ascii(&line);
                    if trimmed.eq_ignore_ascii_case(b"END:VCARD") {
                        break;
                    }
                    if trimmed.eq_ignore_ascii_case(b"BEGIN:VCARD") {
                        // The card never ended; what follows is the next card.
                        self.unread = Some((no, line, false));
                        return Some(Err(Rejected {
                            line: begin,
                            reason: format!(
                                "card has no END:VCARD before the BEGIN:VCARD on line {no}"
                            ),
                        }));
                    }
                    if trimmed.is_empty() {
                        continue;
                    }
                    bytes += line.len();
                    oversized |= too_long
                        || bytes > self.limits.max_card_bytes
                        || lines.len() >= self.limits.max_properties;
                    if !oversized {
                        lines.push((no, line));
                    }
                }
            }
        }
        if oversized {
            return Some(Err(Rejected {
                line: begin,
                reason: format!(
                    "card exceeds the limits ({} bytes, {} properties, {} bytes per line)",
                    self.limits.max_card_bytes,
                    self.limits.max_properties,
                    self.limits.max_line_bytes
                ),
            }));
        }
        Some(parse_card(begin, &lines))
    }
}

impl<R: BufRead> Iterator for VcardReader<R> {
    type Item = Result<Card, Rejected>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_card()
    }
}

/// Reads every card in `input` (a whole file in memory).
pub fn read_all(input: &[u8]) -> (Vec<Card>, Vec<Rejected>) {
    let mut cards = Vec::new();
    let mut rejected = Vec::new();
    for item in VcardReader::new(input) {
        match item {
            Ok(c) => cards.push(c),
            Err(r) => rejected.push(r),
        }
    }
    (cards, rejected)
}

fn io_rejected(line: u64, e: &std::io::Error) -> Rejected {
    Rejected {
        line,
        reason: format!("read error: {}", e.kind()),
    }
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// Whether a line's parameters declare quoted-printable (`ENCODING=QUOTED-PRINTABLE`, or the
/// bare 2.1 form), so that a trailing `=` is a soft line break.
fn is_quoted_printable(line: &[u8]) -> bool {
    let head_end = line.iter().position(|&b| b == b':').unwrap_or(line.len());
    line[..head_end].split(|&b| b == b';').skip(1).any(|param| {
        let param = param.trim_ascii();
        param.eq_ignore_ascii_case(b"QUOTED-PRINTABLE")
            || param.eq_ignore_ascii_case(b"ENCODING=QUOTED-PRINTABLE")
    })
}

fn parse_card(begin: u64, lines: &[(u64, Vec<u8>)]) -> Result<Card, Rejected> {
    let mut contact = Contact::new();
    let mut version = None;
    for (no, line) in lines {
        let no = *no;
        let parsed = parse_line(line).map_err(|reason| Rejected { line: no, reason })?;
        if parsed.name == "VERSION" && parsed.group.is_none() {
            version = Some(String::from_utf8_lossy(parsed.raw_value).trim().to_owned());
            continue;
        }
        let property = decode_property(parsed).map_err(|reason| Rejected { line: no, reason })?;
        contact.push(property);
    }
    let mut warnings = Vec::new();
    if version.is_none() {
        warnings.push(
            "card has no VERSION; read as vCard 4.0 with 3.0 and 2.1 forms accepted".to_owned(),
        );
    }
    Ok(Card {
        contact,
        line: begin,
        version,
        warnings,
    })
}

struct RawLine<'a> {
    group: Option<String>,
    name: String,
    params: Vec<Param>,
    raw_value: &'a [u8],
}

fn parse_line(line: &[u8]) -> Result<RawLine<'_>, String> {
    let name_end = line
        .iter()
        .position(|&b| b == b';' || b == b':')
        .ok_or_else(|| "line has no ':' between property name and value".to_owned())?;
    let full_name = &line[..name_end];
    let (group, name) = match full_name.iter().rposition(|&b| b == b'.') {
        Some(dot) => (Some(&full_name[..dot]), &full_name[dot + 1..]),
        None => (None, full_name),
    };
    let valid = |s: &[u8]| {
        !s.is_empty()
            && s.iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !valid(name) || group.is_some_and(|g| !valid(g)) {
        return Err("invalid property name (letters, digits and '-' only)".into());
    }
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    let group = group.map(|g| String::from_utf8_lossy(g).into_owned());

    let mut params = Vec::new();
    let mut i = name_end;
    while line.get(i) == Some(&b';') {
        i += 1;
        let start = i;
        let mut in_quotes = false;
        while i < line.len() {
            match line[i] {
                b'"' => in_quotes = !in_quotes,
                b';' | b':' if !in_quotes => break,
                _ => {}
            }
            i += 1;
        }
        if i >= line.len() {
            return Err("line has no ':' between parameters and value".into());
        }
        let text = std::str::from_utf8(&line[start..i])
            .map_err(|_| "parameter is not valid UTF-8".to_owned())?;
        if !text.is_empty() {
            params.push(parse_param(text));
        }
    }
    // Here line[i] == b':'
    Ok(RawLine {
        group,
        name,
        params,
        raw_value: &line[i + 1..],
    })
}

fn parse_param(text: &str) -> Param {
    let name_ok = |n: &str| {
        let n = n.trim();
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    match text.split_once('=').filter(|(name, _)| name_ok(name)) {
        None => {
            // vCard 2.1 bare parameter: `TEL;WORK;VOICE`, `NOTE;QUOTED-PRINTABLE`.
            let value = caret_decode(text.trim());
            let name = match value.to_ascii_uppercase().as_str() {
                "QUOTED-PRINTABLE" | "BASE64" | "B" | "8BIT" | "7BIT" => "ENCODING",
                _ => "TYPE",
            };
            Param {
                name: name.into(),
                values: vec![value],
            }
        }
        Some((name, values)) => {
            let mut out = Vec::new();
            let mut current = String::new();
            let mut in_quotes = false;
            for c in values.chars() {
                match c {
                    '"' => in_quotes = !in_quotes,
                    ',' if !in_quotes => out.push(caret_decode(&std::mem::take(&mut current))),
                    c => current.push(c),
                }
            }
            out.push(caret_decode(&current));
            Param {
                name: name.trim().to_ascii_uppercase(),
                values: out,
            }
        }
    }
}

/// RFC 6868: `^n` newline, `^'` double quote, `^^` caret. A stray CR is dropped: parameter
/// values cannot carry one.
fn caret_decode(s: &str) -> String {
    if !s.contains(['^', '\r']) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '^' {
            match chars.peek() {
                Some('n') => {
                    chars.next();
                    out.push('\n');
                }
                Some('\'') => {
                    chars.next();
                    out.push('"');
                }
                Some('^') => {
                    chars.next();
                    out.push('^');
                }
                _ => out.push('^'),
            }
        } else if c != '\r' {
            out.push(c);
        }
    }
    out
}

const BINARY_PROPERTIES: [(&str, &str); 4] = [
    ("PHOTO", "image"),
    ("LOGO", "image"),
    ("SOUND", "audio"),
    ("KEY", "application"),
];

/// Removes every parameter called `name`; returns the first value. (A parameter that was
/// acted on must not survive in a second copy, or a re-read would act on that one.)
fn take_param(params: &mut Vec<Param>, name: &str) -> Option<String> {
    let first = params
        .iter()
        .find(|p| p.name == name)
        .and_then(|p| p.values.first().cloned());
    params.retain(|p| p.name != name);
    first
}

fn decode_property(raw: RawLine<'_>) -> Result<Property, String> {
    let RawLine {
        group,
        name,
        mut params,
        raw_value,
    } = raw;
    let encoding = params
        .iter()
        .find(|p| p.name == "ENCODING")
        .and_then(|p| p.values.first())
        .map(|v| v.to_ascii_uppercase());
    let binary_prefix = BINARY_PROPERTIES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, m)| *m);

    let value = match (encoding.as_deref(), binary_prefix) {
        (Some("B" | "BASE64"), Some(prefix)) => {
            let payload: String = String::from_utf8_lossy(raw_value)
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect();
            if base64::engine::general_purpose::STANDARD
                .decode(payload.as_bytes())
                .is_ok()
            {
                take_param(&mut params, "ENCODING");
                // A character set says nothing about binary data.
                take_param(&mut params, "CHARSET");
                let media = media_type_from_params(&mut params, prefix);
                format!("data:{media};base64,{payload}")
            } else {
                // Not valid base64: keep it exactly as written rather than lose the property.
                decode_text(raw_value, None)?
            }
        }
        (Some("QUOTED-PRINTABLE"), _) => {
            take_param(&mut params, "ENCODING");
            let bytes = decode_quoted_printable(raw_value)
                .ok_or_else(|| format!("{name} has an invalid quoted-printable sequence"))?;
            let charset = take_param(&mut params, "CHARSET");
            decode_text(&bytes, charset.as_deref())?
        }
        _ => {
            let charset = take_param(&mut params, "CHARSET");
            decode_text(raw_value, charset.as_deref())?
        }
    };

    canonicalize_params(&name, &mut params);

    let value = canonical_value(&name, &params, &value);
    Ok(Property {
        group,
        name,
        params,
        value,
    })
}

/// The media type of a 2.1/3.0 inline binary value, from its `TYPE` parameter (which is then
/// consumed): `TYPE=JPEG` on a photo means `image/jpeg`.
fn media_type_from_params(params: &mut Vec<Param>, prefix: &str) -> String {
    let Some(at) = params.iter().position(|p| p.name == "TYPE") else {
        return "application/octet-stream".to_owned();
    };
    let ty = params[at].values.remove(0).to_ascii_lowercase();
    if params[at].values.is_empty() {
        params.remove(at);
    }
    if ty.contains('/') {
        ty
    } else {
        format!("{prefix}/{ty}")
    }
}

/// Decodes quoted-printable bytes (soft line breaks are already joined). `None` on a bad escape.
pub(crate) fn decode_quoted_printable(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'=' {
            if i + 1 == input.len() {
                break; // a trailing soft break
            }
            let hex = |b: u8| (b as char).to_digit(16);
            let hi = hex(*input.get(i + 1)?)?;
            let lo = hex(*input.get(i + 2)?)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    Some(out)
}

fn decode_text(bytes: &[u8], charset: Option<&str>) -> Result<String, String> {
    if let Some(label) = charset {
        let encoding = encoding_rs::Encoding::for_label(label.trim().as_bytes())
            .ok_or_else(|| "unknown CHARSET".to_owned())?;
        let (text, _, _) = encoding.decode(bytes);
        return Ok(text.into_owned());
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_owned()),
        // Undeclared 8-bit text from old exporters is nearly always Windows-1252.
        Err(_) => Ok(encoding_rs::WINDOWS_1252.decode(bytes).0.into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &str) -> Contact {
        let (cards, rejected) = read_all(input.as_bytes());
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(cards.len(), 1);
        cards.into_iter().next().unwrap().contact
    }

    #[test]
    fn reads_folded_4_0() {
        let c =
            one("BEGIN:VCARD\r\nVERSION:4.0\r\nFN:Jo\r\n hn Doe\r\nNOTE:a\\, b\r\nEND:VCARD\r\n");
        assert_eq!(c.formatted_name().as_deref(), Some("John Doe"));
        assert_eq!(c.note().as_deref(), Some("a, b"));
    }

    #[test]
    fn reads_2_1_quoted_printable_and_bare_types() {
        let input = "BEGIN:VCARD\nVERSION:2.1\nN;CHARSET=UTF-8;ENCODING=QUOTED-PRINTABLE:M=C3=BCller;J=\n=C3=BCrgen;;;\nNOTE;ENCODING=QUOTED-PRINTABLE;CHARSET=ISO-8859-1:M=FCller=0D=0Aline2\nTEL;WORK;VOICE:+49 30 1234\nEND:VCARD\n";
        let c = one(input);
        let n = c.name().unwrap();
        assert_eq!(n.family, "Müller");
        assert_eq!(n.given, "Jürgen");
        assert_eq!(c.note().as_deref(), Some("Müller\nline2"));
        let tel = c.first("TEL").unwrap();
        assert_eq!(tel.types(), vec!["work", "voice"]);
        assert!(tel.params.iter().all(|p| p.name != "ENCODING"));
    }

    #[test]
    fn binary_photo_becomes_data_uri() {
        let c = one(
            "BEGIN:VCARD\r\nVERSION:3.0\r\nFN:x\r\nPHOTO;ENCODING=b;TYPE=JPEG:AAEC\r\n Aw==\r\nEND:VCARD\r\n",
        );
        assert_eq!(c.photo(), Some("data:image/jpeg;base64,AAECAw=="));
        assert!(c.first("PHOTO").unwrap().params.is_empty());
    }

    #[test]
    fn bad_cards_are_reported_and_the_rest_read() {
        let input = "BEGIN:VCARD\nFN:a\nEND:VCARD\ngarbage\nBEGIN:VCARD\nFN:b\nno colon here\nEND:VCARD\nEND:VCARD\nBEGIN:VCARD\nFN:c\nBEGIN:VCARD\nFN:d\nEND:VCARD\nBEGIN:VCARD\nFN:e\n";
        let (cards, rejected) = read_all(input.as_bytes());
        let names: Vec<_> = cards
            .iter()
            .map(|c| c.contact.formatted_name().unwrap())
            .collect();
        assert_eq!(names, vec!["a", "d"]);
        let lines: Vec<_> = rejected.iter().map(|r| r.line).collect();
        assert_eq!(lines, vec![4, 7, 9, 10, 15]);
    }

    #[test]
    fn limits_bound_memory() {
        let limits = Limits {
            max_card_bytes: 100,
            max_properties: 3,
            max_line_bytes: 50,
        };
        let long = format!(
            "BEGIN:VCARD\nNOTE:{}\nEND:VCARD\nBEGIN:VCARD\nFN:ok\nEND:VCARD\n",
            "x".repeat(1000)
        );
        let items: Vec<_> = VcardReader::with_limits(long.as_bytes(), limits).collect();
        assert!(items[0].is_err());
        assert!(items[1].is_ok());
    }

    #[test]
    fn caret_and_quoted_params() {
        let c = one(
            "BEGIN:VCARD\nVERSION:4.0\nFN:x\nX-CUSTOM;X-PARAM=\"a:b,c\";X-Q=^'q^'^n:v\nEND:VCARD\n",
        );
        let p = c.first("X-CUSTOM").unwrap();
        assert_eq!(p.params[0].values, vec!["a:b,c"]);
        assert_eq!(p.params[1].values, vec!["\"q\"\n"]);
    }
}
