//! Reading the head of a message too large to parse whole: its top-level `id`, and whether it
//! is a request or a response, from whatever bytes were kept. Never fails: what cannot be seen
//! stays unknown.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::Id;

/// What could be learned from the first bytes of a message too large to parse whole.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadInfo {
    /// The top-level `id`, if it appears within the head.
    pub id: Option<Id>,
    /// Whether a top-level `method` member appears within the head.
    pub has_method: bool,
    /// Whether a top-level `result` or `error` member appears within the head.
    pub is_response: bool,
}

/// Scans the head of a (possibly truncated) JSON object for its top-level `id`, `method`,
/// `result` and `error` members. Never fails: what cannot be seen stays unknown.
pub fn scan_head(head: &[u8]) -> HeadInfo {
    let mut info = HeadInfo::default();
    let mut s = Scanner { b: head, i: 0 };
    s.ws();
    if !s.eat(b'{') {
        return info;
    }
    loop {
        s.ws();
        let Some(key) = s.string() else {
            return info;
        };
        s.ws();
        if !s.eat(b':') {
            return info;
        }
        s.ws();
        match key.as_ref() {
            "method" => info.has_method = true,
            "result" | "error" => info.is_response = true,
            _ => {}
        }
        let start = s.i;
        if !s.skip_value() {
            return info;
        }
        if key == "id" {
            info.id = std::str::from_utf8(&head[start..s.i])
                .ok()
                .and_then(|t| serde_json::from_str::<&RawValue>(t).ok())
                .and_then(Id::from_raw);
        }
        s.ws();
        if !s.eat(b',') {
            return info;
        }
    }
}

/// A forgiving cursor over JSON bytes; each method returns false/None on anything unexpected.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scanner<'_> {
    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    /// Skips a string starting at `"`; returns its raw end position.
    fn skip_string(&mut self) -> bool {
        if !self.eat(b'"') {
            return false;
        }
        while let Some(&c) = self.b.get(self.i) {
            self.i += 1;
            match c {
                b'\\' => self.i += 1,
                b'"' => return true,
                _ => {}
            }
        }
        false
    }

    fn string(&mut self) -> Option<Cow<'static, str>> {
        let start = self.i;
        if !self.skip_string() {
            return None;
        }
        let raw = std::str::from_utf8(&self.b[start..self.i]).ok()?;
        serde_json::from_str::<Cow<'_, str>>(raw)
            .ok()
            .map(|c| Cow::Owned(c.into_owned()))
    }

    fn skip_value(&mut self) -> bool {
        match self.b.get(self.i) {
            Some(b'"') => self.skip_string(),
            Some(b'{') | Some(b'[') => {
                let mut depth = 0usize;
                while let Some(&c) = self.b.get(self.i) {
                    match c {
                        b'"' => {
                            if !self.skip_string() {
                                return false;
                            }
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return true;
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
                false
            }
            Some(_) => {
                let start = self.i;
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace())
                {
                    self.i += 1;
                }
                // A scalar cut off by the end of the head is not trusted.
                self.i > start && self.i < self.b.len()
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn head_scan_finds_id_before_a_cut() {
        let head = br#"{"jsonrpc":"2.0","method":"tools/call","params":{"a":[1,{"id":9}]},"id":"r-7","x":"aaaaaaaa"#;
        let info = scan_head(head);
        assert_eq!(info.id, Some(Id::Str("r-7".into())));
        assert!(info.has_method);
        assert!(!info.is_response);
        let info = scan_head(br#"{"id":12"#);
        assert_eq!(info.id, None, "a number cut at the end is not trusted");
        let info = scan_head(br#"{"jsonrpc":"2.0","id":12,"result":{"content":"xxxx"#);
        assert_eq!(info.id, Some(Id::Num("12".into())));
        assert!(info.is_response);
    }

    proptest! {
        #[test]
        fn head_scan_agrees_with_full_parse(id in 0u64..1_000_000, s in "[a-z]{0,20}") {
            let msg = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"m","params":{{"s":"{s}"}}}}"#);
            let info = scan_head(msg.as_bytes());
            prop_assert_eq!(info.id, Some(Id::Num(id.to_string().into())));
            let cut = &msg.as_bytes()[..msg.len() / 2];
            let _ = scan_head(cut);
        }
    }
}
