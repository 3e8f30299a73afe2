//! Splits a Dockerfile into instructions the way BuildKit's parser does:
//! parser directives, comments, line continuations with the escape
//! character, and heredoc bodies.
//!
//! It is deliberately tolerant: nothing here fails. A line that BuildKit would
//! reject becomes a [`Warning`] with its line number and the rest of the file
//! is still read, so one odd instruction never hides the `FROM` lines around it.

use std::collections::HashMap;

use super::args::split_words;
use super::dockerfile::Warning;

/// Instructions BuildKit knows. Anything else is reported and skipped.
const KNOWN: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Instructions that take heredocs (BuildKit's list).
const HEREDOC_INSTRUCTIONS: &[&str] = &["ADD", "COPY", "RUN"];

/// One instruction, continuation lines joined and heredoc bodies removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Instruction {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// The instruction name, uppercased (`FROM`, `COPY`...).
    pub keyword: String,
    /// Everything after the name, continuations joined, trimmed.
    pub arguments: String,
}

/// A tokenised Dockerfile.
#[derive(Debug, Clone, Default)]
pub(crate) struct Syntax {
    /// The escape character (`\` unless a `# escape=` directive says otherwise).
    pub escape: char,
    /// Known instructions in file order.
    pub instructions: Vec<Instruction>,
    /// Lines that were skipped.
    pub warnings: Vec<Warning>,
}

/// Tokenises `text` (without BOM).
pub(crate) fn tokenize(text: &str) -> Syntax {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let (escape, mut warnings, first) = directives(&lines);
    let mut instructions = Vec::new();
    let mut index = None;
    let mut i = first;
    while i < lines.len() {
        let start = i;
        let head = lines[i];
        i += 1;
        let trimmed = head.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut logical = String::from(trimmed);
        while let Some(stripped) = continued(&logical, escape) {
            let keep = stripped.len();
            logical.truncate(keep);
            // Comment and blank lines inside a continuation are dropped.
            while i < lines.len() && is_blank_or_comment(lines[i]) {
                i += 1;
            }
            let Some(next) = lines.get(i) else { break };
            logical.push_str(next);
            i += 1;
        }
        let (keyword, arguments) = match logical.split_once(char::is_whitespace) {
            Some((k, rest)) => (k, rest.trim()),
            None => (logical.as_str(), ""),
        };
        let keyword = keyword.to_ascii_uppercase();
        let line = start + 1;
        if !KNOWN.contains(&keyword.as_str()) {
            warnings.push(Warning {
                line,
                message: format!(
                    "unknown instruction {:?}: line skipped",
                    truncated(&keyword)
                ),
            });
            continue;
        }
        // `ONBUILD RUN <<EOF` carries heredocs too.
        let effective = if keyword == "ONBUILD" {
            arguments
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_ascii_uppercase()
        } else {
            keyword.clone()
        };
        if HEREDOC_INSTRUCTIONS.contains(&effective.as_str()) {
            for heredoc in heredocs(arguments, escape) {
                let index = index.get_or_insert_with(|| LineIndex::new(&lines));
                match index.body_end(i, &heredoc) {
                    Some(end) => i = end + 1,
                    None => {
                        // BuildKit fails here; reading on keeps later lines.
                        warnings.push(Warning {
                            line,
                            message: format!(
                                "heredoc <<{} is never terminated: the lines after it are read as instructions",
                                truncated(&heredoc.name)
                            ),
                        });
                        break;
                    }
                }
            }
        }
        instructions.push(Instruction {
            line,
            keyword,
            arguments: arguments.to_owned(),
        });
    }
    Syntax {
        escape,
        instructions,
        warnings,
    }
}

/// Reads the parser directives at the top of the file: the escape character,
/// warnings, and the index of the first line after them.
fn directives(lines: &[&str]) -> (char, Vec<Warning>, usize) {
    let mut escape = '\\';
    let mut warnings = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((key, value)) = directive(line) else {
            return (escape, warnings, i);
        };
        if key.eq_ignore_ascii_case("escape") {
            match value {
                "\\" => escape = '\\',
                "`" => escape = '`',
                other => warnings.push(Warning {
                    line: i + 1,
                    message: format!(
                        "invalid escape directive {:?} (only \\ or `): ignored",
                        truncated(other)
                    ),
                }),
            }
        }
    }
    (escape, warnings, lines.len())
}

/// `# key=value` with a simple key, as BuildKit recognises a directive.
fn directive(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (key, value) = rest.split_once('=')?;
    let key = key.trim();
    let simple = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric());
    simple.then_some((key, value.trim()))
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

/// When `line` ends with the escape character (trailing blanks allowed), the
/// line without it.
fn continued(line: &str, escape: char) -> Option<&str> {
    line.trim_end_matches([' ', '\t']).strip_suffix(escape)
}

/// A heredoc opened on an instruction line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Heredoc {
    /// The delimiter, quotes removed.
    pub name: String,
    /// `<<-`: leading tabs are stripped from the body and the delimiter line.
    pub strip_tabs: bool,
}

/// The heredocs opened by an instruction's arguments, in order: every word of
/// the form `[n]<<[-]NAME`, with NAME optionally quoted (`<<"EOF"`, `<<'EOF'`).
pub(crate) fn heredocs(arguments: &str, escape: char) -> Vec<Heredoc> {
    split_words(arguments, escape)
        .into_iter()
        .filter_map(|word| {
            let rest = word.trim_start_matches(|c: char| c.is_ascii_digit());
            let rest = rest.strip_prefix("<<")?;
            let (strip_tabs, rest) = match rest.strip_prefix('-') {
                Some(r) => (true, r),
                None => (false, rest),
            };
            if rest.contains('<') {
                return None;
            }
            let name: String = rest.chars().filter(|c| *c != '"' && *c != '\'').collect();
            (!name.is_empty()).then_some(Heredoc { name, strip_tabs })
        })
        .collect()
}

/// Where each line text occurs, so that finding a heredoc's end does not scan
/// the rest of the file again for every heredoc (many unterminated ones would
/// make that quadratic).
struct LineIndex<'t> {
    exact: HashMap<&'t str, Vec<usize>>,
    without_tabs: HashMap<&'t str, Vec<usize>>,
}

impl<'t> LineIndex<'t> {
    fn new(lines: &[&'t str]) -> Self {
        let mut exact: HashMap<&str, Vec<usize>> = HashMap::new();
        let mut without_tabs: HashMap<&str, Vec<usize>> = HashMap::new();
        for (i, line) in lines.iter().enumerate() {
            exact.entry(line).or_default().push(i);
            without_tabs
                .entry(line.trim_start_matches('\t'))
                .or_default()
                .push(i);
        }
        Self {
            exact,
            without_tabs,
        }
    }

    /// Index of the first line at or after `from` closing `heredoc`.
    fn body_end(&self, from: usize, heredoc: &Heredoc) -> Option<usize> {
        let map = if heredoc.strip_tabs {
            &self.without_tabs
        } else {
            &self.exact
        };
        let found = map.get(heredoc.name.as_str())?;
        found.get(found.partition_point(|&i| i < from)).copied()
    }
}

/// Keeps user text in messages short.
fn truncated(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(MAX).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests;
