//! The `[idem_lint]` table of a `dylint.toml`, read without a TOML library (this crate has no
//! dependencies). The grammar accepted is the subset the table uses: `key = value` lines whose
//! values are strings, arrays (over several lines, with comments and trailing commas) and
//! inline tables of strings and string arrays. Anything else is an error, never ignored.

use std::fmt;

/// One entry of the deny list: a crate that is an HTTP client or a provider SDK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DenyEntry {
    /// Package name as on crates.io (`async-stripe`); a trailing `*` matches any suffix.
    pub package: String,
    /// Library (crate) name as rustc sees it (`stripe`); by default the package name with `_`.
    pub lib: String,
    /// Features that make the package a client (hyper's `client`); empty: any use counts.
    /// Read by the dependency gate; the lint goes by `modules` instead.
    pub features: Vec<String>,
    /// Module paths, crate name first (`hyper::client`), that hold the client; empty: the
    /// whole crate. An item counts when its defining path starts with one of them.
    pub modules: Vec<Vec<String>>,
}

impl DenyEntry {
    /// An entry for a whole crate (package and library name alike).
    pub fn crate_only(name: &str) -> Self {
        let name = name.trim();
        Self {
            package: name.replace('_', "-"),
            lib: crate::crate_name(name),
            features: Vec::new(),
            modules: Vec::new(),
        }
    }

    /// Whether this entry names the crate `krate` (a rustc crate name).
    pub fn matches_crate(&self, krate: &str) -> bool {
        match self.lib.strip_suffix('*') {
            Some(prefix) => krate.starts_with(prefix),
            None => self.lib == krate,
        }
    }

    /// Whether the item at `path` (without the crate) inside `krate` is covered.
    pub fn covers(&self, krate: &str, path: &[&str]) -> bool {
        if !self.matches_crate(krate) {
            return false;
        }
        if self.modules.is_empty() {
            return true;
        }
        self.modules.iter().any(|module| {
            // The module's first segment is the crate name.
            let rest = &module[1..];
            rest.len() <= path.len() && rest.iter().zip(path).all(|(m, p)| m == p)
        })
    }
}

/// The lists of an `[idem_lint]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Crate names or module paths where HTTP clients may be used.
    pub allowed: Vec<String>,
    /// The HTTP clients and provider SDKs.
    pub deny: Vec<DenyEntry>,
    /// Packages the dependency gate does not follow (the lint ignores them).
    pub vetted: Vec<String>,
}

/// Why a `dylint.toml` could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// 1-based line of the problem.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dylint.toml line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Array(Vec<Value>),
    Table(Vec<(String, Value)>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Str(String),
    Word(String),
    Punct(char),
    Newline,
}

fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, ConfigError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '#' => break,
                ' ' | '\t' | '\r' => {}
                '"' => {
                    let mut s = String::new();
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some('"') => s.push('"'),
                                Some('\\') => s.push('\\'),
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                other => {
                                    return Err(ConfigError {
                                        line: line_no,
                                        message: format!("unsupported escape \\{other:?}"),
                                    });
                                }
                            },
                            Some(c) => s.push(c),
                            None => {
                                return Err(ConfigError {
                                    line: line_no,
                                    message: "unterminated string".into(),
                                });
                            }
                        }
                    }
                    out.push((Tok::Str(s), line_no));
                }
                '[' | ']' | '{' | '}' | '=' | ',' | '.' => out.push((Tok::Punct(c), line_no)),
                c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => {
                    let mut w = String::from(c);
                    while let Some(&d) = chars.peek() {
                        if d.is_ascii_alphanumeric() || d == '_' || d == '-' {
                            w.push(d);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                    out.push((Tok::Word(w), line_no));
                }
                other => {
                    return Err(ConfigError {
                        line: line_no,
                        message: format!("unexpected character {other:?}"),
                    });
                }
            }
        }
        out.push((Tok::Newline, line_no));
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

impl Parser {
    fn line(&self) -> usize {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map_or(0, |t| t.1)
    }
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ConfigError> {
        Err(ConfigError {
            line: self.line(),
            message: message.into(),
        })
    }
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.0.clone());
        self.pos += 1;
        t
    }
    fn skip_newlines(&mut self) {
        while self.peek() == Some(&Tok::Newline) {
            self.pos += 1;
        }
    }
    fn expect(&mut self, c: char) -> Result<(), ConfigError> {
        match self.next() {
            Some(Tok::Punct(p)) if p == c => Ok(()),
            other => self.err(format!("expected `{c}`, found {other:?}")),
        }
    }
    fn key(&mut self) -> Result<String, ConfigError> {
        match self.next() {
            Some(Tok::Word(w)) | Some(Tok::Str(w)) => Ok(w),
            other => self.err(format!("expected a key, found {other:?}")),
        }
    }
    /// A value; arrays may span lines, inline tables may not (as in TOML 1.0).
    fn value(&mut self) -> Result<Value, ConfigError> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Value::Str(s)),
            Some(Tok::Punct('[')) => {
                let mut items = Vec::new();
                loop {
                    self.skip_newlines();
                    if self.peek() == Some(&Tok::Punct(']')) {
                        self.pos += 1;
                        return Ok(Value::Array(items));
                    }
                    items.push(self.value()?);
                    self.skip_newlines();
                    match self.next() {
                        Some(Tok::Punct(',')) => {}
                        Some(Tok::Punct(']')) => return Ok(Value::Array(items)),
                        other => return self.err(format!("expected `,` or `]`, found {other:?}")),
                    }
                }
            }
            Some(Tok::Punct('{')) => {
                let mut fields = Vec::new();
                if self.peek() == Some(&Tok::Punct('}')) {
                    self.pos += 1;
                    return Ok(Value::Table(fields));
                }
                loop {
                    let k = self.key()?;
                    self.expect('=')?;
                    let v = self.value()?;
                    fields.push((k, v));
                    match self.next() {
                        Some(Tok::Punct(',')) => {}
                        Some(Tok::Punct('}')) => return Ok(Value::Table(fields)),
                        other => return self.err(format!("expected `,` or `}}`, found {other:?}")),
                    }
                }
            }
            other => self.err(format!("unsupported value {other:?}")),
        }
    }
}

fn strings(v: &Value, what: &str, line: usize) -> Result<Vec<String>, ConfigError> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Str(s) => Ok(s.clone()),
                _ => Err(ConfigError {
                    line,
                    message: format!("`{what}` must be a list of strings"),
                }),
            })
            .collect(),
        _ => Err(ConfigError {
            line,
            message: format!("`{what}` must be a list of strings"),
        }),
    }
}

fn deny_entry(v: &Value, line: usize) -> Result<DenyEntry, ConfigError> {
    let bad = |message: String| ConfigError { line, message };
    let Value::Table(fields) = v else {
        return Err(bad("a `deny` entry must be an inline table".into()));
    };
    let mut package = None;
    let mut lib = None;
    let mut features = Vec::new();
    let mut modules = Vec::new();
    for (k, v) in fields {
        match (k.as_str(), v) {
            ("package", Value::Str(s)) => package = Some(s.trim().to_owned()),
            ("lib", Value::Str(s)) => lib = Some(crate::crate_name(s)),
            ("features", v) => features = strings(v, "features", line)?,
            ("modules", v) => {
                for m in strings(v, "modules", line)? {
                    let segs: Vec<String> = m
                        .trim()
                        .trim_start_matches("::")
                        .split("::")
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty())
                        .collect();
                    if segs.is_empty() {
                        return Err(bad("an empty `modules` entry".into()));
                    }
                    modules.push(segs);
                }
            }
            (other, _) => return Err(bad(format!("unknown or mistyped `deny` field `{other}`"))),
        }
    }
    let package = package
        .filter(|p| !p.is_empty())
        .ok_or_else(|| bad("a `deny` entry needs `package`".into()))?;
    let lib = lib.unwrap_or_else(|| crate::crate_name(&package));
    for m in &mut modules {
        m[0] = crate::crate_name(&m[0]);
        if !DenyEntry::crate_only(&lib).matches_crate(&m[0]) && m[0] != lib {
            return Err(bad(format!(
                "module `{}` is not inside crate `{lib}`",
                m.join("::")
            )));
        }
    }
    Ok(DenyEntry {
        package,
        lib,
        features,
        modules,
    })
}

impl Config {
    /// Reads the `[idem_lint]` table of a `dylint.toml`. Other tables are skipped; within
    /// `[idem_lint]`, `allowed`, `deny`, `vetted` and `http_crates` (extra whole crates to
    /// deny) are read and any other key is an error. A list the table does not set is empty.
    ///
    /// # Errors
    ///
    /// A line outside the supported grammar, or a field of the wrong shape.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut p = Parser {
            toks: tokenize(text)?,
            pos: 0,
        };
        let mut config = Config {
            allowed: Vec::new(),
            deny: Vec::new(),
            vetted: Vec::new(),
        };
        let mut in_table = false;
        loop {
            p.skip_newlines();
            let Some(tok) = p.peek().cloned() else {
                break;
            };
            if tok == Tok::Punct('[') {
                p.pos += 1;
                let mut name = Vec::new();
                loop {
                    match p.next() {
                        Some(Tok::Word(w)) | Some(Tok::Str(w)) => name.push(w),
                        Some(Tok::Punct('.')) => {}
                        Some(Tok::Punct(']')) => break,
                        other => return p.err(format!("bad table header at {other:?}")),
                    }
                }
                in_table = name == ["idem_lint"];
                continue;
            }
            let line = p.line();
            let key = p.key()?;
            p.expect('=')?;
            let value = p.value()?;
            match p.next() {
                Some(Tok::Newline) | None => {}
                other => return p.err(format!("expected the end of the line, found {other:?}")),
            }
            if !in_table {
                continue;
            }
            match key.as_str() {
                "allowed" => config.allowed = strings(&value, "allowed", line)?,
                "http_crates" => config.deny.extend(
                    strings(&value, "http_crates", line)?
                        .iter()
                        .map(|c| DenyEntry::crate_only(c)),
                ),
                "deny" => {
                    let Value::Array(items) = &value else {
                        return Err(ConfigError {
                            line,
                            message: "`deny` must be a list of inline tables".into(),
                        });
                    };
                    for item in items {
                        config.deny.push(deny_entry(item, line)?);
                    }
                }
                "vetted" => {
                    let Value::Array(items) = &value else {
                        return Err(ConfigError {
                            line,
                            message: "`vetted` must be a list of inline tables".into(),
                        });
                    };
                    for item in items {
                        match item {
                            Value::Table(fields) => {
                                let package =
                                    fields.iter().find_map(|(k, v)| match (k.as_str(), v) {
                                        ("package", Value::Str(s)) => Some(s.clone()),
                                        _ => None,
                                    });
                                config.vetted.push(package.ok_or(ConfigError {
                                    line,
                                    message: "a `vetted` entry needs `package`".into(),
                                })?);
                            }
                            _ => {
                                return Err(ConfigError {
                                    line,
                                    message: "`vetted` must be a list of inline tables".into(),
                                });
                            }
                        }
                    }
                }
                other => {
                    return Err(ConfigError {
                        line,
                        message: format!("unknown key `{other}` in [idem_lint]"),
                    });
                }
            }
        }
        Ok(config)
    }
}
