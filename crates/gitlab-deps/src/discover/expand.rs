//! Dockerfile word processing: quote removal, escapes and `$VAR` expansion.
//!
//! This follows BuildKit's shell lexer for the forms that matter to image
//! references: `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR-word}`, `${VAR:+word}`,
//! `${VAR+word}`, `${VAR:?msg}`, `${VAR?msg}`, the trims `${VAR#glob}`,
//! `${VAR##glob}`, `${VAR%glob}`, `${VAR%%glob}` and the replacements
//! `${VAR/glob/text}`, `${VAR//glob/text}`. Globs know `*` and `?` (no
//! bracket expressions, as in BuildKit); an escaped `*` or `?` is literal.
//! Anything else (`${#VAR}`, `${VAR:1}`...) is reported rather than guessed at.

/// The outcome of expanding one word.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Expanded {
    /// The expanded text.
    pub value: String,
    /// Problems that make `value` untrustworthy, e.g. `"ARG TAG has no value"`.
    pub problems: Vec<String>,
    /// True when the word refers to a variable at all (`$X`, `${...}`), even
    /// one that expanded to nothing.
    pub uses_variables: bool,
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
        depth: 0,
        escape,
        lookup,
    };
    let out = lexer.word(&[]);
    Expanded {
        value: out.text(),
        problems: out.problems,
        uses_variables: out.uses_variables,
    }
}

/// A word being built: each character remembers whether it was escaped, which
/// makes a `*` or `?` literal when the word is used as a glob.
#[derive(Debug, Default)]
struct Out {
    chars: Vec<(char, bool)>,
    problems: Vec<String>,
    uses_variables: bool,
}

impl Out {
    fn push(&mut self, c: char) {
        self.chars.push((c, false));
    }

    fn push_literal(&mut self, c: char) {
        self.chars.push((c, true));
    }

    fn push_str(&mut self, s: &str) {
        self.chars.extend(s.chars().map(|c| (c, false)));
    }

    fn text(&self) -> String {
        self.chars.iter().map(|(c, _)| c).collect()
    }

    fn merge(&mut self, other: Out) {
        self.chars.extend(other.chars);
        self.problems.extend(other.problems);
        self.uses_variables |= other.uses_variables;
    }
}

/// Longest value or glob a trim or replacement works on.
const MAX_PATTERN_INPUT: usize = 1024;

/// Deepest `${...}` nesting followed; deeper is reported, never a stack overflow.
const MAX_DEPTH: usize = 32;

struct Lexer<'c, 'l, 'a> {
    chars: &'c [char],
    pos: usize,
    depth: usize,
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

    /// Processes characters until the end or an unquoted character of `stop`
    /// (left for the caller). Escaped characters are marked literal, which
    /// is what makes `\*` a plain star in a glob.
    fn word(&mut self, stop: &[char]) -> Out {
        let mut out = Out::default();
        while let Some(c) = self.peek() {
            if stop.contains(&c) {
                break;
            }
            self.pos += 1;
            if c == self.escape {
                match self.bump() {
                    Some(n) => out.push_literal(n),
                    // A trailing escape stays literal, as in BuildKit.
                    None => out.push_literal(c),
                }
            } else if c == '\'' {
                self.single_quoted(&mut out);
            } else if c == '"' {
                self.double_quoted(&mut out);
            } else if c == '$' {
                self.dollar(&mut out);
            } else {
                out.push(c);
            }
        }
        out
    }

    fn single_quoted(&mut self, out: &mut Out) {
        while let Some(c) = self.bump() {
            if c == '\'' {
                return;
            }
            out.push(c);
        }
        out.problems.push("unterminated single quote".to_owned());
    }

    fn double_quoted(&mut self, out: &mut Out) {
        while let Some(c) = self.bump() {
            if c == '"' {
                return;
            }
            if c == self.escape {
                match self.peek() {
                    Some(n) if n == '"' || n == '$' || n == self.escape => {
                        self.pos += 1;
                        out.push_literal(n);
                    }
                    _ => out.push(c),
                }
            } else if c == '$' {
                self.dollar(out);
            } else {
                out.push(c);
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
    fn dollar(&mut self, out: &mut Out) {
        match self.peek() {
            Some('{') => {
                self.pos += 1;
                out.uses_variables = true;
                self.braced(out);
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                out.uses_variables = true;
                let name = self.name();
                self.plain(&name, out);
            }
            // A lone `$` is literal in BuildKit too.
            _ => out.push('$'),
        }
    }

    fn plain(&self, name: &str, out: &mut Out) {
        match (self.lookup)(name) {
            Some(v) => out.push_str(v),
            None => out.problems.push(format!("ARG {name} has no value")),
        }
    }

    /// Reads the `}` closing a `${...}`; reports it missing.
    fn close(&mut self, out: &mut Out) -> bool {
        if self.bump() == Some('}') {
            true
        } else {
            out.problems.push("unterminated ${...}".to_owned());
            false
        }
    }

    /// Called just after `${`.
    fn braced(&mut self, out: &mut Out) {
        if self.depth >= MAX_DEPTH {
            out.problems
                .push(format!("${{...}} nested more than {MAX_DEPTH} deep"));
            self.pos = self.chars.len();
            return;
        }
        self.depth += 1;
        self.braced_inner(out);
        self.depth -= 1;
    }

    fn braced_inner(&mut self, out: &mut Out) {
        let start = self.pos;
        let name = self.name();
        if name.is_empty() {
            self.skip_braced(start, out);
            return;
        }
        let op_start = self.pos;
        // BuildKit accepts a `:` before every operator; it only changes `-`, `+` and `?`.
        let colon = self.peek() == Some(':');
        if colon {
            self.pos += 1;
        }
        match self.peek() {
            Some('}') if !colon => {
                self.pos += 1;
                self.plain(&name, out);
            }
            Some(op @ ('-' | '+' | '?')) => {
                self.pos += 1;
                let alt = self.word(&['}']);
                if !self.close(out) {
                    return;
                }
                let value = (self.lookup)(&name);
                // With `:` an empty value counts as unset.
                let set = value.is_some_and(|v| !colon || !v.is_empty());
                match (op, set) {
                    ('-', true) | ('?', true) => out.push_str(value.unwrap_or_default()),
                    ('-', false) | ('+', true) => out.merge(alt),
                    ('+', false) => out.uses_variables |= alt.uses_variables,
                    _ => out.problems.push(format!("ARG {name} has no value")),
                }
            }
            Some(op @ ('#' | '%')) => {
                self.pos += 1;
                let longest = self.peek() == Some(op);
                if longest {
                    self.pos += 1;
                }
                let pattern = self.word(&['}']);
                if !self.close(out) {
                    return;
                }
                let Some(value) = self.value_of(&name, &pattern, out) else {
                    return;
                };
                let glob = Glob::new(&pattern.chars);
                let trimmed = if op == '#' {
                    glob.strip_prefix(&value, longest)
                } else {
                    glob.strip_suffix(&value, longest)
                };
                out.push_str(&trimmed);
            }
            Some('/') if !colon => {
                self.pos += 1;
                let all = self.peek() == Some('/');
                if all {
                    self.pos += 1;
                }
                let pattern = self.word(&['/', '}']);
                // `${V/a}` (no replacement) deletes the match, as in a shell.
                let replacement = if self.peek() == Some('/') {
                    self.pos += 1;
                    self.word(&['}'])
                } else {
                    Out::default()
                };
                if !self.close(out) {
                    return;
                }
                let Some(value) = self.value_of(&name, &pattern, out) else {
                    return;
                };
                let glob = Glob::new(&pattern.chars);
                let replaced = glob.replace(&value, &replacement.text(), all);
                out.problems.extend(replacement.problems);
                out.push_str(&replaced);
            }
            _ => {
                self.pos = op_start;
                self.skip_braced(start, out);
            }
        }
    }

    /// The value a trim or replacement works on; an unset variable or a
    /// broken pattern is a problem (`None`).
    fn value_of(&self, name: &str, pattern: &Out, out: &mut Out) -> Option<Vec<char>> {
        out.uses_variables |= pattern.uses_variables;
        out.problems.extend(pattern.problems.iter().cloned());
        let Some(value) = (self.lookup)(name) else {
            out.problems.push(format!("ARG {name} has no value"));
            return None;
        };
        let value: Vec<char> = value.chars().collect();
        // Matching is quadratic in the value: refuse what no image name needs.
        if value.len() > MAX_PATTERN_INPUT || pattern.chars.len() > MAX_PATTERN_INPUT {
            out.problems.push(format!(
                "${{{name}...}} works on more than {MAX_PATTERN_INPUT} characters"
            ));
            return None;
        }
        Some(value)
    }

    /// Skips an unsupported `${...}` up to its matching `}` and reports it.
    fn skip_braced(&mut self, start: usize, out: &mut Out) {
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
        out.push_str("${");
        out.push_str(&text);
        out.problems
            .push(format!("unsupported variable expansion ${{{text}"));
    }
}

/// One element of a shell glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// `*`: any run of characters.
    Star,
    /// `?`: any one character.
    Any,
    /// A character matching itself.
    Char(char),
}

/// A shell glob as BuildKit reads one inside `${...}`.
struct Glob {
    tokens: Vec<Token>,
}

impl Glob {
    fn new(chars: &[(char, bool)]) -> Self {
        let tokens = chars
            .iter()
            .map(|&(c, literal)| match c {
                '*' if !literal => Token::Star,
                '?' if !literal => Token::Any,
                c => Token::Char(c),
            })
            .collect();
        Self { tokens }
    }

    /// `ends[k]` is true when the glob matches `s[..k]`, for every `k` at once:
    /// one pass of the glob's automaton, `O(len(s) * len(glob))`.
    fn match_ends(&self, s: &[char]) -> Vec<bool> {
        let n = self.tokens.len();
        let mut active = vec![false; n + 1];
        active[0] = true;
        self.close_stars(&mut active);
        let mut ends = Vec::with_capacity(s.len() + 1);
        ends.push(active[n]);
        let mut next = vec![false; n + 1];
        for &c in s {
            next.iter_mut().for_each(|b| *b = false);
            for (i, token) in self.tokens.iter().enumerate() {
                if !active[i] {
                    continue;
                }
                match token {
                    Token::Star => next[i] = true,
                    Token::Any => next[i + 1] = true,
                    Token::Char(x) if *x == c => next[i + 1] = true,
                    Token::Char(_) => {}
                }
            }
            self.close_stars(&mut next);
            std::mem::swap(&mut active, &mut next);
            ends.push(active[n]);
            if !active.contains(&true) {
                // No state left: nothing longer can match.
                ends.resize(s.len() + 1, false);
                break;
            }
        }
        ends
    }

    /// A star may match nothing: being before it means being after it too.
    fn close_stars(&self, active: &mut [bool]) {
        for (i, token) in self.tokens.iter().enumerate() {
            if active[i] && *token == Token::Star {
                active[i + 1] = true;
            }
        }
    }

    /// True when the glob matches all of `s`.
    #[cfg(test)]
    fn matches(&self, s: &[char]) -> bool {
        self.match_ends(s).last().copied().unwrap_or(false)
    }

    /// `${V#glob}` / `${V##glob}`: removes the shortest / longest matching prefix.
    fn strip_prefix(&self, value: &[char], longest: bool) -> String {
        let ends = self.match_ends(value);
        let mut lengths = (0..ends.len()).filter(|&k| ends[k]);
        let cut = if longest {
            lengths.next_back()
        } else {
            lengths.next()
        };
        value[cut.unwrap_or(0)..].iter().collect()
    }

    /// `${V%glob}` / `${V%%glob}`: removes the shortest / longest matching suffix
    /// (the reversed glob against the reversed value, as BuildKit does).
    fn strip_suffix(&self, value: &[char], longest: bool) -> String {
        let reversed = Glob {
            tokens: self.tokens.iter().rev().copied().collect(),
        };
        let backwards: Vec<char> = value.iter().rev().copied().collect();
        let ends = reversed.match_ends(&backwards);
        let mut lengths = (0..ends.len()).filter(|&k| ends[k]);
        let cut = if longest {
            lengths.next_back()
        } else {
            lengths.next()
        };
        value[..value.len() - cut.unwrap_or(0)].iter().collect()
    }

    /// The leftmost match at or after `from`, longest at that start (BuildKit's
    /// replacement globs are greedy): `(start, end)`.
    fn find(&self, value: &[char], from: usize) -> Option<(usize, usize)> {
        (from..=value.len()).find_map(|start| {
            let ends = self.match_ends(&value[start..]);
            ends.iter()
                .rposition(|&m| m)
                .map(|len| (start, start + len))
        })
    }

    /// `${V/glob/text}` (first match) and `${V//glob/text}` (every match).
    fn replace(&self, value: &[char], replacement: &str, all: bool) -> String {
        let mut out = String::new();
        let mut pos = 0;
        let mut last_end = None;
        while let Some((start, end)) = self.find(value, pos) {
            // Like Go's regexp: no empty match right after the previous match.
            if start == end && last_end == Some(start) {
                match value.get(start) {
                    Some(c) => {
                        out.push(*c);
                        pos = start + 1;
                        continue;
                    }
                    None => break,
                }
            }
            out.extend(&value[pos..start]);
            out.push_str(replacement);
            last_end = Some(end);
            if !all {
                pos = end;
                break;
            }
            if start == end {
                // Step over one character so an empty match cannot loop.
                match value.get(end) {
                    Some(c) => out.push(*c),
                    None => {
                        pos = end;
                        break;
                    }
                }
                pos = end + 1;
            } else {
                pos = end;
            }
        }
        out.extend(value.get(pos..).unwrap_or_default());
        out
    }
}

#[cfg(test)]
mod tests;
