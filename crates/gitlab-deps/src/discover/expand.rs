//! Dockerfile word processing: quote removal, escapes and `$VAR` expansion.
//!
//! This mirrors the subset of BuildKit's shell lexer that matters for image
//! references: `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`,
//! `${VAR+word}`, `${VAR:?msg}` and `${VAR?msg}`. Anything else (`${VAR#x}`,
//! `${VAR/a/b}`, ...) is reported as unsupported rather than guessed at.

/// The outcome of expanding one word.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Expanded {
    /// The expanded text.
    pub value: String,
    /// Problems that make `value` untrustworthy, e.g. `"ARG TAG has no value"`.
    pub problems: Vec<String>,
}

/// Expands `word`, looking variables up with `lookup` (`None` means unset).
pub(crate) fn expand<'a>(
    word: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<&'a str>,
) -> Expanded {
    let chars: Vec<char> = word.chars().collect();
    let mut lexer = Lexer {
        chars: &chars,
        pos: 0,
        escape,
        lookup,
    };
    lexer.word(false)
}

struct Lexer<'c, 'l, 'a> {
    chars: &'c [char],
    pos: usize,
    escape: char,
    lookup: &'l dyn Fn(&str) -> Option<&'a str>,
}

impl Lexer<'_, '_, '_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    /// Processes characters until the end, or an unquoted `}` when `in_brace`
    /// (the `}` is left for the caller).
    fn word(&mut self, in_brace: bool) -> Expanded {
        let mut out = Expanded::default();
        while let Some(c) = self.peek() {
            if in_brace && c == '}' {
                break;
            }
            self.pos += 1;
            if c == self.escape {
                // A trailing escape stays literal, as in BuildKit.
                out.value.push(self.bump().unwrap_or(c));
            } else if c == '\'' {
                self.single_quoted(&mut out);
            } else if c == '"' {
                self.double_quoted(&mut out);
            } else if c == '$' {
                self.dollar(&mut out);
            } else {
                out.value.push(c);
            }
        }
        out
    }

    fn single_quoted(&mut self, out: &mut Expanded) {
        while let Some(c) = self.bump() {
            if c == '\'' {
                return;
            }
            out.value.push(c);
        }
        out.problems.push("unterminated single quote".to_owned());
    }

    fn double_quoted(&mut self, out: &mut Expanded) {
        while let Some(c) = self.bump() {
            if c == '"' {
                return;
            }
            if c == self.escape {
                match self.peek() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.pos += 1;
                        out.value.push(n);
                    }
                    _ => out.value.push(c),
                }
            } else if c == '$' {
                self.dollar(out);
            } else {
                out.value.push(c);
            }
        }
        out.problems.push("unterminated double quote".to_owned());
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c == '_' || c.is_ascii_alphanumeric() {
                name.push(c);
                self.pos += 1;
            } else {
                break;
            }
        }
        name
    }

    /// Called just after a `$`.
    fn dollar(&mut self, out: &mut Expanded) {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                self.braced(out);
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                let name = self.name();
                self.plain(&name, out);
            }
            // A lone `$` is literal in BuildKit too.
            _ => out.value.push('$'),
        }
    }

    fn plain(&self, name: &str, out: &mut Expanded) {
        match (self.lookup)(name) {
            Some(v) => out.value.push_str(v),
            None => out.problems.push(format!("ARG {name} has no value")),
        }
    }

    /// Called just after `${`.
    fn braced(&mut self, out: &mut Expanded) {
        let start = self.pos;
        let name = self.name();
        if name.is_empty() {
            self.skip_braced(start, out);
            return;
        }
        let op_start = self.pos;
        let colon = self.peek() == Some(':');
        if colon {
            self.pos += 1;
        }
        let op = self.peek();
        match op {
            Some('}') if !colon => {
                self.pos += 1;
                self.plain(&name, out);
            }
            Some(op @ ('-' | '+' | '?')) => {
                self.pos += 1;
                let alt = self.word(true);
                if self.bump() != Some('}') {
                    out.problems.push("unterminated ${...}".to_owned());
                    return;
                }
                let value = (self.lookup)(&name);
                // With `:` an empty value counts as unset.
                let set = value.is_some_and(|v| !colon || !v.is_empty());
                match (op, set) {
                    ('-', true) | ('?', true) => out.value.push_str(value.unwrap_or_default()),
                    ('-', false) | ('+', true) => merge(out, alt),
                    ('+', false) => {}
                    _ => out.problems.push(format!("ARG {name} has no value")),
                }
            }
            _ => {
                self.pos = op_start;
                self.skip_braced(start, out);
            }
        }
    }

    /// Skips an unsupported `${...}` up to its matching `}` and reports it.
    fn skip_braced(&mut self, start: usize, out: &mut Expanded) {
        let mut depth = 1usize;
        while let Some(c) = self.bump() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                _ => {}
            }
        }
        let end = self.pos.min(self.chars.len());
        let text: String = self
            .chars
            .get(start..end)
            .unwrap_or_default()
            .iter()
            .collect();
        out.value.push_str("${");
        out.value.push_str(&text);
        out.problems
            .push(format!("unsupported variable expansion ${{{text}"));
    }
}

fn merge(out: &mut Expanded, other: Expanded) {
    out.value.push_str(&other.value);
    out.problems.extend(other.problems);
}

#[cfg(test)]
mod tests;
