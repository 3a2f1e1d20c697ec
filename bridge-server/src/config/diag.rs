//! Problems found in a config file: where (file, line and column), which key, and what to do.
//!
//! Every section of the file is checked and every problem collected, so one run of
//! `check-config` reports them all, in file order.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A byte range in the config text.
pub(super) type Span = Range<usize>;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The relay refuses the file: it does not start, and `check-config` exits 64.
    Error,
    /// The relay starts, but something will not work until it is fixed (a tool whose command is
    /// not installed yet, say).
    Warning,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Error or warning.
    pub severity: Severity,
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The dotted key the problem belongs to (`tool[1].name`); none for TOML syntax errors.
    pub key: Option<String>,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.path.display(), self.line, self.column)?;
        if self.severity == Severity::Warning {
            f.write_str("warning: ")?;
        }
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// What is wrong with a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file has problems, at least one of them an error. Displayed one per line.
    #[error("{}", lines(problems))]
    Invalid {
        /// Every problem found (warnings too), in file order.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems found, in file order (none for a file that could not be read).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems } => problems,
        }
    }
}

fn lines(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(Problem::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Collects the problems of one file while its sections are checked.
pub(super) struct Problems<'t> {
    path: &'t Path,
    text: &'t str,
    list: Vec<Problem>,
}

impl<'t> Problems<'t> {
    pub(super) fn new(path: &'t Path, text: &'t str) -> Problems<'t> {
        Problems {
            path,
            text,
            list: Vec::new(),
        }
    }

    /// An error about `key`, at `at`.
    pub(super) fn error(&mut self, at: Span, key: &str, message: impl Into<String>) {
        self.push(Severity::Error, at, Some(key.to_owned()), message.into());
    }

    /// A warning about `key`, at `at`.
    pub(super) fn warn(&mut self, at: Span, key: &str, message: impl Into<String>) {
        self.push(Severity::Warning, at, Some(key.to_owned()), message.into());
    }

    /// A TOML syntax error (no key).
    pub(super) fn syntax(&mut self, at: Span, message: &str) {
        self.push(Severity::Error, at, None, message.trim().to_owned());
    }

    /// Where the file ends: the place to report something missing from the whole file.
    pub(super) fn end(&self) -> Span {
        self.text.len()..self.text.len()
    }

    fn push(&mut self, severity: Severity, at: Span, key: Option<String>, message: String) {
        let (line, column) = line_col(self.text, at.start);
        self.list.push(Problem {
            severity,
            path: self.path.to_owned(),
            line,
            column,
            key,
            message,
        });
    }

    /// The value when there was no error (with the warnings, in file order); else every
    /// problem, in file order.
    pub(super) fn finish<T>(self, value: T) -> Result<(T, Vec<Problem>), ConfigError> {
        if self.list.iter().any(|p| p.severity == Severity::Error) {
            Err(self.into_error())
        } else {
            Ok((value, self.sorted()))
        }
    }

    /// Every problem found, in file order, as an error.
    pub(super) fn into_error(self) -> ConfigError {
        ConfigError::Invalid {
            problems: self.sorted(),
        }
    }

    fn sorted(mut self) -> Vec<Problem> {
        // Stable: problems at one place keep the order they were found in.
        self.list.sort_by_key(|p| (p.line, p.column));
        self.list
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |nl| nl + 1);
    (line, before[line_start..].chars().count() + 1)
}
