//! Typed reads from a parsed TOML table that report, instead of stopping at, what is wrong: an
//! unknown key, a value of the wrong type, a number out of range. Each read returns `None` for
//! a key that is absent or wrong, so a section goes on checking its other keys.

use std::collections::BTreeMap;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::diag::{Problems, Span};

/// One table of the file (the top level, `[limits]`, one `[[tool]]`, …), named by its dotted key.
pub(super) struct Section<'a, 'i> {
    /// Dotted key of the table (`limits`, `tool[2]`); empty for the top level.
    key: String,
    /// How the table is written in the file (`[limits]`, `[[tool]]`), for messages.
    header: String,
    table: &'a DeTable<'i>,
    /// Where the table starts (its header): where a missing key is reported.
    at: Span,
}

impl<'a, 'i> Section<'a, 'i> {
    /// The whole file.
    pub(super) fn root(table: &'a DeTable<'i>) -> Section<'a, 'i> {
        Section {
            key: String::new(),
            header: "the top level".to_owned(),
            table,
            at: 0..0,
        }
    }

    /// The dotted key of `field` in this table (`tool[0].command`).
    pub(super) fn key(&self, field: &str) -> String {
        if self.key.is_empty() {
            field.to_owned()
        } else {
            format!("{}.{field}", self.key)
        }
    }

    /// The dotted key of the table itself.
    pub(super) fn name(&self) -> &str {
        &self.key
    }

    /// Where the table starts (its header line).
    pub(super) fn at(&self) -> Span {
        self.at.clone()
    }

    /// Whether `field` is set.
    pub(super) fn has(&self, field: &str) -> bool {
        self.table.get(field).is_some()
    }

    /// Where `field`'s value is written, or the table's header when it is absent.
    pub(super) fn span(&self, field: &str) -> Span {
        self.table.get(field).map_or(self.at(), Spanned::span)
    }

    /// Reports every key that is not one of `known`, with the nearest known one as a hint.
    pub(super) fn only(&self, known: &[&str], p: &mut Problems<'_>) {
        for (k, _) in self.table.iter() {
            let name = k.get_ref().as_ref();
            if known.contains(&name) {
                continue;
            }
            let hint = match nearest(name, known) {
                Some(c) => format!("did you mean `{c}`? "),
                // A top-level key written after a table header lands in that table.
                None => match nearest(name, super::TOP_LEVEL_KEYS).filter(|_| !self.key.is_empty())
                {
                    Some(c) => format!(
                        "did you mean `{c}`? It belongs at the top level: move it above the \
                         first [table]; "
                    ),
                    None => String::new(),
                },
            };
            p.error(
                k.span(),
                &self.key(name),
                format!(
                    "unknown key in {}: {hint}the keys are {}",
                    self.header,
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
        }
    }

    /// Reports `field` as missing (at the table's header).
    pub(super) fn missing(&self, field: &str, what: &str, p: &mut Problems<'_>) {
        let place = if self.key.is_empty() {
            "the file".to_owned()
        } else {
            self.header.clone()
        };
        p.error(
            self.at(),
            &self.key(field),
            format!("missing: {place} needs `{field}`, {what}"),
        );
    }

    fn value(&self, field: &str) -> Option<&'a Spanned<DeValue<'i>>> {
        self.table.get(field)
    }

    fn wrong_type(&self, field: &str, v: &Spanned<DeValue<'_>>, want: &str, p: &mut Problems<'_>) {
        p.error(
            v.span(),
            &self.key(field),
            format!("expected {want}, found {}", article(v.get_ref().type_str())),
        );
    }

    /// A string value.
    pub(super) fn string(&self, field: &str, p: &mut Problems<'_>) -> Option<(&'a str, Span)> {
        let v = self.value(field)?;
        let s = self.peek_string(field);
        if s.is_none() {
            self.wrong_type(field, v, "a string", p);
        }
        s
    }

    /// A string value, if `field` holds one, without reporting anything.
    pub(super) fn peek_string(&self, field: &str) -> Option<(&'a str, Span)> {
        let v = self.value(field)?;
        match v.get_ref() {
            DeValue::String(s) => Some((s.as_ref(), v.span())),
            _ => None,
        }
    }

    /// A whole number from 0 up.
    pub(super) fn uint(&self, field: &str, p: &mut Problems<'_>) -> Option<(u64, Span)> {
        let v = self.value(field)?;
        let DeValue::Integer(i) = v.get_ref() else {
            self.wrong_type(field, v, "a whole number", p);
            return None;
        };
        match i128::from_str_radix(i.as_str(), i.radix()).map(u64::try_from) {
            Ok(Ok(n)) => Some((n, v.span())),
            Ok(Err(_)) if i.as_str().starts_with('-') => {
                p.error(v.span(), &self.key(field), "must be 0 or more");
                None
            }
            _ => {
                p.error(v.span(), &self.key(field), "is too large");
                None
            }
        }
    }

    /// A whole number from 0 up, as a count or size.
    pub(super) fn usize(&self, field: &str, p: &mut Problems<'_>) -> Option<(usize, Span)> {
        let (n, at) = self.uint(field, p)?;
        match usize::try_from(n) {
            Ok(n) => Some((n, at)),
            Err(_) => {
                p.error(at, &self.key(field), "is too large");
                None
            }
        }
    }

    /// A size in bytes: a whole number, or a string with a unit (`"512MiB"`, `"2 GiB"`, `"64k"`).
    pub(super) fn size(&self, field: &str, p: &mut Problems<'_>) -> Option<(u64, Span)> {
        let v = self.value(field)?;
        if let DeValue::String(s) = v.get_ref() {
            return match parse_size(s) {
                Some(n) => Some((n, v.span())),
                None => {
                    p.error(
                        v.span(),
                        &self.key(field),
                        format!(
                            "{:?} is not a size: write a number of bytes, or one with a unit \
                             such as \"512MiB\" or \"2GiB\" (KiB, MiB, GiB; K, M, G)",
                            s.as_ref()
                        ),
                    );
                    None
                }
            };
        }
        self.uint(field, p)
    }

    /// `true` or `false`.
    pub(super) fn bool(&self, field: &str, p: &mut Problems<'_>) -> Option<bool> {
        let v = self.value(field)?;
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(field, v, "true or false", p);
                None
            }
        }
    }

    /// An array of strings.
    pub(super) fn strings(&self, field: &str, p: &mut Problems<'_>) -> Option<Vec<String>> {
        let v = self.value(field)?;
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(field, v, "an array of strings", p);
            return None;
        };
        let mut out = Vec::new();
        let mut ok = true;
        for (n, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::String(s) => out.push(s.to_string()),
                other => {
                    ok = false;
                    p.error(
                        item.span(),
                        &format!("{}[{n}]", self.key(field)),
                        format!("expected a string, found {}", article(other.type_str())),
                    );
                }
            }
        }
        ok.then_some(out)
    }

    /// An inline table of strings (`env = { TZ = "UTC" }`).
    pub(super) fn string_map(
        &self,
        field: &str,
        p: &mut Problems<'_>,
    ) -> Option<BTreeMap<String, String>> {
        let v = self.value(field)?;
        let DeValue::Table(t) = v.get_ref() else {
            self.wrong_type(field, v, "a table of strings, e.g. { TZ = \"UTC\" }", p);
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, item) in t.iter() {
            match item.get_ref() {
                DeValue::String(s) => {
                    out.insert(k.get_ref().to_string(), s.to_string());
                }
                other => {
                    ok = false;
                    p.error(
                        item.span(),
                        &format!("{}.{}", self.key(field), k.get_ref()),
                        format!("expected a string, found {}", article(other.type_str())),
                    );
                }
            }
        }
        ok.then_some(out)
    }

    /// A table of string arrays (`[auth.jwt.scopes]`: `"mcp:time" = ["time"]`).
    pub(super) fn string_lists(
        &self,
        field: &str,
        p: &mut Problems<'_>,
    ) -> Option<BTreeMap<String, Vec<String>>> {
        let v = self.value(field)?;
        let Some(section) = self.child(field) else {
            self.wrong_type(
                field,
                v,
                "a table of string arrays, e.g. { \"mcp:time\" = [\"time\"] }",
                p,
            );
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, _) in section.table.iter() {
            match section.strings(k.get_ref(), p) {
                Some(list) => {
                    out.insert(k.get_ref().to_string(), list);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// A sub-table (`[auth.jwt]` within `[auth]`, or `[limits]` within the top level).
    pub(super) fn table(&self, field: &str, p: &mut Problems<'_>) -> Option<Section<'a, 'i>> {
        let v = self.value(field)?;
        let section = self.child(field);
        if section.is_none() {
            self.wrong_type(field, v, &format!("a table ([{}])", self.key(field)), p);
        }
        section
    }

    /// The sub-table `field`, if there is one, without reporting anything.
    pub(super) fn child(&self, field: &str) -> Option<Section<'a, 'i>> {
        let v = self.value(field)?;
        let DeValue::Table(t) = v.get_ref() else {
            return None;
        };
        Some(Section {
            key: self.key(field),
            header: format!("[{}]", self.key(field)),
            table: t,
            at: v.span(),
        })
    }

    /// An array of tables (`[[tool]]`), each named `field[n]`.
    pub(super) fn tables(&self, field: &str, p: &mut Problems<'_>) -> Vec<Section<'a, 'i>> {
        let Some(v) = self.value(field) else {
            return Vec::new();
        };
        let want = format!("one or more [[{}]] tables", self.key(field));
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(field, v, &want, p);
            return Vec::new();
        };
        let mut out = Vec::new();
        for (n, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::Table(t) => out.push(Section {
                    key: format!("{}[{n}]", self.key(field)),
                    header: format!("[[{}]]", self.key(field)),
                    table: t,
                    at: item.span(),
                }),
                other => p.error(
                    item.span(),
                    &format!("{}[{n}]", self.key(field)),
                    format!("expected {want}, found {}", article(other.type_str())),
                ),
            }
        }
        out
    }
}

/// The known key closest to a misspelt `name`, if one is close enough.
fn nearest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|candidate| (edit_distance(name, candidate), *candidate))
        .filter(|(d, _)| *d <= (name.chars().count() / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// "an integer", "a string".
fn article(type_name: &str) -> String {
    match type_name.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {type_name}"),
        _ => format!("a {type_name}"),
    }
}

/// Levenshtein distance, for "did you mean" hints on unknown keys.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("comand", "command"), 1);
        assert_eq!(edit_distance("lisen", "listen"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}

/// `"512MiB"` → 536870912. Units are powers of 1024; `B` or no unit is bytes.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    n.checked_mul(1u64 << shift)
}

#[cfg(test)]
mod size_tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("2 GiB"), Some(2 << 30));
        assert_eq!(parse_size("64k"), Some(64 << 10));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("1.5G"), None);
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }
}
