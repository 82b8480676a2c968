//! Which crates are idem adapters, read from their own `Cargo.toml`, without a TOML library.
//!
//! An adapter says so in its manifest:
//!
//! ```toml
//! [package.metadata.idem]
//! adapter = true
//! service = "Stripe"          # the name a diagnostic uses
//! hosts = ["stripe.com"]      # host suffixes that identify the service (for suggestions)
//! ```
//!
//! [`Manifest::parse`] reads the TOML a `Cargo.toml` uses (tables, arrays of tables, dotted and
//! quoted keys, basic, literal and multi-line strings, booleans, numbers, arrays, inline tables)
//! and fails on anything else: a manifest it cannot read makes no crate an adapter. Inside
//! `[package.metadata.idem]` only `adapter` (a boolean), `service` (a string) and `hosts` (a list
//! of strings) are accepted, so a misspelt key is an error rather than silently ignored.
//!
//! This file is self-contained (no `crate::` paths): the policy crate's build script includes it
//! to generate the built-in adapter list from idem's own workspace.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

/// An adapter crate, as its `[package.metadata.idem]` table describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adapter {
    /// Service name a diagnostic uses, e.g. `Stripe`.
    pub service: String,
    /// Package name, e.g. `idem-stripe`.
    pub package: String,
    /// Library crate name as rustc sees it, e.g. `idem_stripe` (`[lib] name` when set).
    pub lib: String,
    /// Host suffixes that identify the service, lower-cased, e.g. `stripe.com`.
    pub hosts: Vec<String>,
}

/// Why a manifest could not be read, or its `[package.metadata.idem]` table is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// The file, when the text came from one.
    pub path: Option<PathBuf>,
    /// 1-based line of the problem (0: the file as a whole).
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

impl ManifestError {
    fn new(line: usize, message: impl Into<String>) -> Self {
        Self {
            path: None,
            line,
            message: message.into(),
        }
    }

    fn at(mut self, path: &Path) -> Self {
        self.path = Some(path.to_path_buf());
        self
    }
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.path, self.line) {
            (Some(p), 0) => write!(f, "{}: {}", p.display(), self.message),
            (Some(p), line) => write!(f, "{} line {line}: {}", p.display(), self.message),
            (None, 0) => write!(f, "Cargo.toml: {}", self.message),
            (None, line) => write!(f, "Cargo.toml line {line}: {}", self.message),
        }
    }
}

impl std::error::Error for ManifestError {}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Bool(bool),
    /// A number or date, kept as written (nothing here reads one).
    Other(String),
    Array(Vec<Value>),
    /// An inline table (its keys are also flattened into the manifest's entries).
    Table(Vec<(Vec<String>, Value)>),
}

/// A parsed `Cargo.toml`: every value under its full dotted key.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// (full key path, value, line); inline tables are flattened into their keys too.
    entries: Vec<(Vec<String>, Value, usize)>,
    /// Table headers (`[workspace]`), so an empty table still counts as present.
    tables: Vec<Vec<String>>,
}

struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    line: usize,
    _text: &'a str,
}

fn is_bare(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            chars: text.chars().collect(),
            pos: 0,
            line: 1,
            _text: text,
        }
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ManifestError> {
        Err(ManifestError::new(self.line, message))
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn starts_with(&self, s: &str) -> bool {
        s.chars()
            .enumerate()
            .all(|(i, c)| self.peek_at(i) == Some(c))
    }

    /// Spaces and tabs.
    fn blanks(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
    }

    /// Blanks, then a comment, then the end of the line (or of the text).
    fn end_of_line(&mut self) -> Result<(), ManifestError> {
        self.blanks();
        if self.peek() == Some('#') {
            while !matches!(self.peek(), None | Some('\n')) {
                self.pos += 1;
            }
        }
        if self.peek() == Some('\r') {
            self.pos += 1;
        }
        match self.peek() {
            None => Ok(()),
            Some('\n') => {
                self.bump();
                Ok(())
            }
            Some(c) => self.err(format!("expected the end of the line, found {c:?}")),
        }
    }

    /// Blanks, newlines and comments (inside arrays).
    fn gaps(&mut self) {
        loop {
            match self.peek() {
                Some(' ' | '\t' | '\r' | '\n') => {
                    self.bump();
                }
                Some('#') => {
                    while !matches!(self.peek(), None | Some('\n')) {
                        self.pos += 1;
                    }
                }
                _ => return,
            }
        }
    }

    fn key(&mut self) -> Result<Vec<String>, ManifestError> {
        let mut parts = Vec::new();
        loop {
            self.blanks();
            let part = match self.peek() {
                Some('"') => {
                    if self.starts_with("\"\"\"") {
                        return self.err("a multi-line string cannot be a key");
                    }
                    self.basic_string()?
                }
                Some('\'') => {
                    if self.starts_with("'''") {
                        return self.err("a multi-line string cannot be a key");
                    }
                    self.literal_string()?
                }
                Some(c) if is_bare(c) => {
                    let mut s = String::new();
                    while let Some(c) = self.peek().filter(|c| is_bare(*c)) {
                        s.push(c);
                        self.pos += 1;
                    }
                    s
                }
                other => return self.err(format!("expected a key, found {other:?}")),
            };
            parts.push(part);
            self.blanks();
            if self.peek() == Some('.') {
                self.pos += 1;
            } else {
                return Ok(parts);
            }
        }
    }

    fn escape(&mut self, s: &mut String) -> Result<(), ManifestError> {
        match self.bump() {
            Some('b') => s.push('\u{8}'),
            Some('t') => s.push('\t'),
            Some('n') => s.push('\n'),
            Some('f') => s.push('\u{c}'),
            Some('r') => s.push('\r'),
            Some('e') => s.push('\u{1b}'),
            Some('"') => s.push('"'),
            Some('\\') => s.push('\\'),
            Some(u @ ('u' | 'U')) => {
                let n = if u == 'u' { 4 } else { 8 };
                let mut hex = String::new();
                for _ in 0..n {
                    match self.bump() {
                        Some(c) if c.is_ascii_hexdigit() => hex.push(c),
                        _ => return self.err("bad unicode escape"),
                    }
                }
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(c) => s.push(c),
                    None => return self.err("bad unicode escape"),
                }
            }
            other => return self.err(format!("unsupported escape \\{other:?}")),
        }
        Ok(())
    }

    fn basic_string(&mut self) -> Result<String, ManifestError> {
        self.pos += 1; // "
        let mut s = String::new();
        loop {
            match self.bump() {
                Some('"') => return Ok(s),
                Some('\\') => self.escape(&mut s)?,
                Some('\n') | None => return self.err("unterminated string"),
                Some(c) => s.push(c),
            }
        }
    }

    fn literal_string(&mut self) -> Result<String, ManifestError> {
        self.pos += 1; // '
        let mut s = String::new();
        loop {
            match self.bump() {
                Some('\'') => return Ok(s),
                Some('\n') | None => return self.err("unterminated string"),
                Some(c) => s.push(c),
            }
        }
    }

    fn multiline_string(&mut self, quote: char) -> Result<String, ManifestError> {
        self.pos += 3;
        let delim: String = std::iter::repeat_n(quote, 3).collect();
        // A newline right after the opening delimiter is trimmed.
        if self.starts_with("\r\n") {
            self.pos += 1;
        }
        if self.peek() == Some('\n') {
            self.bump();
        }
        let mut s = String::new();
        loop {
            if self.starts_with(&delim) {
                self.pos += 3;
                // Up to two more quotes belong to the string.
                for _ in 0..2 {
                    if self.peek() == Some(quote) {
                        s.push(quote);
                        self.pos += 1;
                    }
                }
                return Ok(s);
            }
            match self.bump() {
                None => return self.err("unterminated multi-line string"),
                Some('\\') if quote == '"' => {
                    // A line-ending backslash trims the newline and the blanks after it.
                    let mut k = 0;
                    while matches!(self.peek_at(k), Some(' ' | '\t' | '\r')) {
                        k += 1;
                    }
                    if self.peek_at(k) == Some('\n') {
                        while matches!(self.peek(), Some(' ' | '\t' | '\r' | '\n')) {
                            self.bump();
                        }
                    } else {
                        self.escape(&mut s)?;
                    }
                }
                Some(c) => s.push(c),
            }
        }
    }

    fn value(&mut self) -> Result<Value, ManifestError> {
        self.blanks();
        match self.peek() {
            Some('"') if self.starts_with("\"\"\"") => Ok(Value::Str(self.multiline_string('"')?)),
            Some('"') => Ok(Value::Str(self.basic_string()?)),
            Some('\'') if self.starts_with("'''") => Ok(Value::Str(self.multiline_string('\'')?)),
            Some('\'') => Ok(Value::Str(self.literal_string()?)),
            Some('[') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.gaps();
                    if self.peek() == Some(']') {
                        self.pos += 1;
                        return Ok(Value::Array(items));
                    }
                    items.push(self.value()?);
                    self.gaps();
                    match self.bump() {
                        Some(',') => {}
                        Some(']') => return Ok(Value::Array(items)),
                        other => return self.err(format!("expected `,` or `]`, found {other:?}")),
                    }
                }
            }
            Some('{') => {
                self.pos += 1;
                let mut fields = Vec::new();
                self.blanks();
                if self.peek() == Some('}') {
                    self.pos += 1;
                    return Ok(Value::Table(fields));
                }
                loop {
                    let k = self.key()?;
                    self.blanks();
                    if self.bump() != Some('=') {
                        return self.err("expected `=` in an inline table");
                    }
                    let v = self.value()?;
                    fields.push((k, v));
                    self.blanks();
                    match self.bump() {
                        Some(',') => {}
                        Some('}') => return Ok(Value::Table(fields)),
                        other => return self.err(format!("expected `,` or `}}`, found {other:?}")),
                    }
                }
            }
            Some(c) if c.is_ascii_alphanumeric() || c == '+' || c == '-' => {
                let mut s = String::new();
                while let Some(c) = self.peek().filter(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.' | ':')
                }) {
                    s.push(c);
                    self.pos += 1;
                }
                Ok(match s.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ if s.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-')
                        || matches!(s.as_str(), "inf" | "nan") =>
                    {
                        Value::Other(s)
                    }
                    _ => return self.err(format!("unsupported value `{s}`")),
                })
            }
            other => self.err(format!("expected a value, found {other:?}")),
        }
    }
}

fn flatten(
    prefix: &[String],
    value: Value,
    line: usize,
    out: &mut Vec<(Vec<String>, Value, usize)>,
) {
    if let Value::Table(fields) = &value {
        for (k, v) in fields.clone() {
            let mut path = prefix.to_vec();
            path.extend(k);
            flatten(&path, v, line, out);
        }
    }
    out.push((prefix.to_vec(), value, line));
}

fn strings(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

impl Manifest {
    /// Parses the text of a `Cargo.toml`.
    ///
    /// # Errors
    ///
    /// Syntax outside the TOML a manifest uses, or a key defined twice.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let mut p = Parser::new(text);
        let mut entries = Vec::new();
        let mut tables: Vec<Vec<String>> = Vec::new();
        let mut prefix: Vec<String> = Vec::new();
        let mut array_counts: Vec<(Vec<String>, usize)> = Vec::new();
        loop {
            p.blanks();
            match p.peek() {
                None => break,
                Some('\n' | '\r' | '#') => {
                    p.end_of_line()?;
                    continue;
                }
                Some('[') => {
                    let array = p.peek_at(1) == Some('[');
                    p.pos += if array { 2 } else { 1 };
                    let name = p.key()?;
                    p.blanks();
                    let close = if array { "]]" } else { "]" };
                    if !p.starts_with(close) {
                        return p.err(format!("expected `{close}` after a table name"));
                    }
                    p.pos += close.len();
                    p.end_of_line()?;
                    if array {
                        // Each `[[name]]` is a new table: number them so their keys differ.
                        let n = match array_counts.iter_mut().find(|(k, _)| *k == name) {
                            Some((_, n)) => {
                                *n += 1;
                                *n
                            }
                            None => {
                                array_counts.push((name.clone(), 0));
                                0
                            }
                        };
                        prefix = name;
                        prefix.push(format!("[{n}]"));
                    } else {
                        if tables.contains(&name) {
                            return p.err(format!("table [{}] defined twice", name.join(".")));
                        }
                        prefix = name;
                    }
                    tables.push(prefix.clone());
                }
                Some(_) => {
                    let line = p.line;
                    let key = p.key()?;
                    p.blanks();
                    if p.bump() != Some('=') {
                        return p.err("expected `=` after a key");
                    }
                    let value = p.value()?;
                    p.end_of_line()?;
                    let mut path = prefix.clone();
                    path.extend(key);
                    flatten(&path, value, line, &mut entries);
                }
            }
        }
        let mut seen = HashSet::new();
        for (path, _, line) in &entries {
            if !seen.insert(path.clone()) {
                return Err(ManifestError::new(
                    *line,
                    format!("key `{}` defined twice", path.join(".")),
                ));
            }
        }
        Ok(Self { entries, tables })
    }

    /// Reads and parses the manifest at `path`.
    ///
    /// # Errors
    ///
    /// The file cannot be read, or [`Manifest::parse`] fails.
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ManifestError::new(0, format!("cannot read: {e}")).at(path))?;
        Self::parse(&text).map_err(|e| e.at(path))
    }

    fn get(&self, path: &[&str]) -> Option<(&Value, usize)> {
        self.entries
            .iter()
            .find(|(p, _, _)| p.iter().map(String::as_str).eq(path.iter().copied()))
            .map(|(_, v, line)| (v, *line))
    }

    fn str_at(&self, path: &[&str]) -> Option<&str> {
        match self.get(path) {
            Some((Value::Str(s), _)) => Some(s),
            _ => None,
        }
    }

    /// Whether the manifest has a table at `path` (a header, or keys under it).
    fn has_table(&self, path: &[&str]) -> bool {
        let under = |p: &[String]| p.len() >= path.len() && p.iter().zip(path).all(|(a, b)| a == b);
        self.tables.iter().any(|t| under(t)) || self.entries.iter().any(|(p, _, _)| under(p))
    }

    /// `[package] name`.
    pub fn package_name(&self) -> Option<&str> {
        self.str_at(&["package", "name"])
    }

    /// The library crate's name as rustc sees it: `[lib] name`, else the package name with `_`.
    pub fn lib_crate_name(&self) -> Option<String> {
        self.str_at(&["lib", "name"])
            .or(self.package_name())
            .map(|n| n.trim().replace('-', "_"))
    }

    /// Whether this manifest has a `[workspace]` table (is a workspace root).
    pub fn is_workspace_root(&self) -> bool {
        self.has_table(&["workspace"])
    }

    /// The package's `[package.metadata.idem]` table, when it says `adapter = true`.
    ///
    /// `Ok(None)`: no such table, or `adapter = false` (or left out).
    ///
    /// # Errors
    ///
    /// A key other than `adapter`, `service`, `hosts`; a value of the wrong type; an adapter
    /// with no `service` or no package name.
    pub fn adapter(&self) -> Result<Option<Adapter>, ManifestError> {
        const TABLE: [&str; 3] = ["package", "metadata", "idem"];
        let mut adapter = None;
        let mut service = None;
        let mut hosts = Vec::new();
        for (path, value, line) in &self.entries {
            if path.len() <= TABLE.len() || !path.iter().zip(TABLE).all(|(a, b)| a == b) {
                continue;
            }
            let bad = |m: &str| ManifestError::new(*line, m.to_owned());
            match (path[3..].join(".").as_str(), value) {
                ("adapter", Value::Bool(b)) => adapter = Some(*b),
                ("adapter", _) => {
                    return Err(bad(
                        "`package.metadata.idem.adapter` must be `true` or `false`",
                    ));
                }
                ("service", Value::Str(s)) if !s.trim().is_empty() => {
                    service = Some(s.trim().to_owned());
                }
                ("service", _) => {
                    return Err(bad(
                        "`package.metadata.idem.service` must be a non-empty string",
                    ));
                }
                ("hosts", v) => match strings(v) {
                    Some(list) if list.iter().all(|h| !h.trim().is_empty()) => {
                        hosts = list.iter().map(|h| h.trim().to_ascii_lowercase()).collect();
                    }
                    _ => {
                        return Err(bad(
                            "`package.metadata.idem.hosts` must be a list of non-empty strings",
                        ));
                    }
                },
                (other, _) => {
                    return Err(bad(&format!(
                        "unknown key `{other}` in [package.metadata.idem] (expected `adapter`, `service`, `hosts`)"
                    )));
                }
            }
        }
        if adapter != Some(true) {
            return Ok(None);
        }
        let (Some(package), Some(lib)) = (self.package_name(), self.lib_crate_name()) else {
            return Err(ManifestError::new(0, "an adapter needs `[package] name`"));
        };
        let Some(service) = service else {
            return Err(ManifestError::new(
                0,
                "an adapter (`adapter = true`) needs `service` in [package.metadata.idem]",
            ));
        };
        Ok(Some(Adapter {
            service,
            package: package.trim().to_owned(),
            lib,
            hosts,
        }))
    }

    /// `[workspace] members` and `exclude`, as written (may hold `*` and `?` globs).
    fn workspace_lists(&self) -> (Vec<String>, Vec<String>) {
        let list = |key| {
            self.get(&["workspace", key])
                .and_then(|(v, _)| strings(v))
                .unwrap_or_default()
        };
        (list("members"), list("exclude"))
    }
}

/// The adapter that `manifest_dir/Cargo.toml` describes, if its library crate is `crate_name`.
///
/// `None` whenever the answer is not a clear yes: no directory, a manifest that cannot be read
/// or parsed, no `adapter = true`, a malformed `[package.metadata.idem]` table, or a crate
/// that is not the package's library (its integration tests, examples and binaries are other
/// crates and stay outside the allowance).
pub fn adapter_crate(manifest_dir: Option<&Path>, crate_name: &str) -> Option<Adapter> {
    let manifest = Manifest::read(&manifest_dir?.join("Cargo.toml")).ok()?;
    let adapter = manifest.adapter().ok()??;
    (adapter.lib == crate_name.trim().replace('-', "_")).then_some(adapter)
}

/// The root of the workspace the package in `manifest_dir` belongs to: the directory named by
/// its `package.workspace`, else the nearest directory (itself included) whose `Cargo.toml` has
/// a `[workspace]` table, else `manifest_dir` itself.
pub fn workspace_root(manifest_dir: &Path) -> PathBuf {
    if let Ok(m) = Manifest::read(&manifest_dir.join("Cargo.toml"))
        && let Some(path) = m.str_at(&["package", "workspace"])
    {
        return manifest_dir.join(path);
    }
    for dir in manifest_dir.ancestors() {
        if let Ok(m) = Manifest::read(&dir.join("Cargo.toml"))
            && m.is_workspace_root()
        {
            return dir.to_path_buf();
        }
    }
    manifest_dir.to_path_buf()
}

/// `*` (any run of characters) and `?` (one character) against `name`.
fn glob_match(pattern: &[char], name: &[char]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some(('*', rest)) => (0..=name.len()).any(|i| glob_match(rest, &name[i..])),
        Some(('?', rest)) => !name.is_empty() && glob_match(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && glob_match(rest, &name[1..]),
    }
}

/// The directories a `members` entry names, in order (globs expanded, sorted by name).
fn expand_member(root: &Path, pattern: &str) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    for segment in pattern.split('/').filter(|s| !s.is_empty() && *s != ".") {
        if !segment.contains(['*', '?']) {
            dirs = dirs.into_iter().map(|d| d.join(segment)).collect();
            continue;
        }
        let pat: Vec<char> = segment.chars().collect();
        let mut next = Vec::new();
        for dir in dirs {
            let Ok(read) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut found: Vec<PathBuf> = read
                .filter_map(Result::ok)
                .filter(|e| e.path().is_dir())
                .filter(|e| {
                    let name: Vec<char> = e.file_name().to_string_lossy().chars().collect();
                    glob_match(&pat, &name)
                })
                .map(|e| e.path())
                .collect();
            found.sort();
            next.extend(found);
        }
        dirs = next;
    }
    dirs
}

/// What [`workspace_adapters`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// The adapters, the root package first, then the members in the order `members` lists them.
    pub adapters: Vec<Adapter>,
    /// The member manifests that were read (for a build script's `rerun-if-changed`).
    pub manifests: Vec<PathBuf>,
    /// Manifests that could not be read, or whose `[package.metadata.idem]` table is wrong.
    pub errors: Vec<ManifestError>,
}

/// The adapters (`[package.metadata.idem] adapter = true`) among the packages of the workspace
/// whose root manifest is `root/Cargo.toml`.
///
/// # Errors
///
/// The root manifest cannot be read or parsed. A member's problem goes to
/// [`Discovery::errors`] and the other members are still read.
pub fn workspace_adapters(root: &Path) -> Result<Discovery, ManifestError> {
    let root_manifest = root.join("Cargo.toml");
    let manifest = Manifest::read(&root_manifest)?;
    let (members, exclude) = manifest.workspace_lists();
    let excluded: Vec<PathBuf> = exclude
        .iter()
        .flat_map(|e| expand_member(root, e))
        .collect();
    let mut dirs = Vec::new();
    if manifest.package_name().is_some() {
        dirs.push(root.to_path_buf());
    }
    for member in &members {
        for dir in expand_member(root, member) {
            if !excluded.contains(&dir) && !dirs.contains(&dir) && dir.join("Cargo.toml").is_file()
            {
                dirs.push(dir);
            }
        }
    }
    let mut found = Discovery::default();
    for dir in dirs {
        let path = dir.join("Cargo.toml");
        let result = if dir == root {
            manifest.adapter().map_err(|e| e.at(&path))
        } else {
            Manifest::read(&path).and_then(|m| m.adapter().map_err(|e| e.at(&path)))
        };
        found.manifests.push(path);
        match result {
            Ok(Some(adapter)) => found.adapters.push(adapter),
            Ok(None) => {}
            Err(e) => found.errors.push(e),
        }
    }
    Ok(found)
}
