//! `ARG` bookkeeping: declared build arguments and their values.

use std::collections::{BTreeMap, HashMap};

use super::expand::{Expanded, expand};

/// Arguments BuildKit declares in the global scope without an `ARG` line.
pub(crate) const PREDEFINED: &[&str] = &[
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// A set of declared arguments; `None` values are declared but unset.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    values: HashMap<String, Option<String>>,
}

impl Scope {
    /// The global scope before any `ARG`: BuildKit's predefined args with the
    /// values in `platform` (name, value), unless the caller overrides them.
    /// Without a platform value they are declared but unset.
    pub(crate) fn predefined(
        overrides: &BTreeMap<String, String>,
        platform: &[(&str, String)],
    ) -> Self {
        let values = PREDEFINED
            .iter()
            .map(|name| {
                let value = overrides.get(*name).cloned().or_else(|| {
                    platform
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                });
                ((*name).to_owned(), value)
            })
            .collect();
        Self { values }
    }

    /// The value of `name`, `None` when undeclared or unset.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).and_then(|v| v.as_deref())
    }

    /// Expands `word` against this scope.
    pub(crate) fn expand(&self, word: &str, escape: char) -> Expanded {
        expand(word, escape, &|name| self.get(name))
    }

    /// Applies one `ARG` instruction's arguments (`A B=1 C="x y"`).
    ///
    /// An override wins over the default; a default whose expansion has
    /// problems leaves the argument unset so that later uses are reported. A
    /// bare `ARG NAME` keeps the value `NAME` already has in this scope
    /// (BuildKit only declares it again).
    pub(crate) fn declare(
        &mut self,
        arguments: &str,
        escape: char,
        overrides: &BTreeMap<String, String>,
    ) {
        for word in split_words(arguments, escape) {
            let (name, default) = match word.split_once('=') {
                Some((name, default)) => (name, Some(default)),
                None => (word, None),
            };
            if name.is_empty() {
                continue;
            }
            let value = if let Some(v) = overrides.get(name) {
                Some(v.clone())
            } else if let Some(default) = default {
                let e = self.expand(default, escape);
                e.problems.is_empty().then_some(e.value)
            } else {
                self.get(name).map(str::to_owned)
            };
            self.values.insert(name.to_owned(), value);
        }
    }
}

/// Splits on unquoted, unescaped whitespace, keeping quotes and escapes.
pub(crate) fn split_words(s: &str, escape: char) -> Vec<&str> {
    let mut words = Vec::new();
    let mut start = None;
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        if c == escape && quote != Some('\'') {
            escaped = true;
            start.get_or_insert(i);
            continue;
        }
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c.is_whitespace() => {
                if let Some(st) = start.take() {
                    words.push(&s[st..i]);
                }
            }
            None => {
                if c == '"' || c == '\'' {
                    quote = Some(c);
                }
                start.get_or_insert(i);
            }
        }
    }
    if let Some(st) = start {
        words.push(&s[st..]);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_words_respecting_quotes() {
        assert_eq!(
            split_words(r#"A="x y" B=2  C 'd e'=f G=a\ b"#, '\\'),
            [r#"A="x y""#, "B=2", "C", "'d e'=f", r"G=a\ b"]
        );
    }

    #[test]
    fn declare_defaults_overrides_and_redeclaration() {
        let overrides = BTreeMap::from([("O".to_owned(), "over".to_owned())]);
        let mut global = Scope::predefined(&overrides, &[]);
        global.declare(r#"A=1 B="${A}-x" O=default N U=$NOPE"#, '\\', &overrides);
        assert_eq!(global.get("A"), Some("1"));
        assert_eq!(global.get("B"), Some("1-x"));
        assert_eq!(global.get("O"), Some("over"));
        assert_eq!(global.get("N"), None);
        assert_eq!(global.get("U"), None);
        assert_eq!(global.get("TARGETARCH"), None);

        // `ARG V=3.20` then `ARG V` keeps 3.20; a new default replaces it.
        global.declare("V=3.20", '\\', &overrides);
        global.declare("V", '\\', &overrides);
        assert_eq!(global.get("V"), Some("3.20"));
        global.declare("V=3.21", '\\', &overrides);
        assert_eq!(global.get("V"), Some("3.21"));
    }

    #[test]
    fn predefined_args_take_platform_values_and_overrides() {
        let platform = [
            ("TARGETARCH", "amd64".to_owned()),
            ("TARGETOS", "linux".to_owned()),
        ];
        let overrides = BTreeMap::from([("TARGETARCH".to_owned(), "arm64".to_owned())]);
        let scope = Scope::predefined(&overrides, &platform);
        assert_eq!(scope.get("TARGETARCH"), Some("arm64"));
        assert_eq!(scope.get("TARGETOS"), Some("linux"));
        assert_eq!(scope.get("BUILDOS"), None);
    }
}
