//! Extracts the images a Dockerfile depends on.
//!
//! [`super::syntax`] splits the file into instructions as BuildKit does
//! (continuations, the escape directive, comments, heredocs); this module
//! applies BuildKit's semantics on top: stage names, `scratch`, global `ARG`
//! expansion, the automatic platform args and the `--from` forms.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::args::{Scope, split_words};
use super::syntax::{Instruction, tokenize};

/// How an image is referenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefKind {
    /// `FROM image`.
    From,
    /// `COPY --from=image`.
    CopyFrom,
    /// `RUN --mount=type=bind|cache,from=image`.
    MountFrom,
}

/// One image the Dockerfile depends on.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct ImageRef {
    /// The reference after `ARG` expansion, otherwise as written (not normalised).
    pub reference: String,
    /// 1-based line of the instruction.
    pub line: usize,
    /// Which instruction form referenced it.
    pub kind: RefKind,
}

/// Something that was skipped but deserves the user's attention.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Warning {
    /// 1-based line of the instruction.
    pub line: usize,
    /// Human-readable explanation.
    pub message: String,
}

/// Everything extracted from one Dockerfile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ParsedDockerfile {
    /// Image dependencies in line order; the same reference on several lines is kept once per line.
    pub images: Vec<ImageRef>,
    /// Lines that could not be used, in line order.
    pub warnings: Vec<Warning>,
}

/// A Dockerfile that cannot be used at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerfileError {
    /// The file has no `FROM` instruction.
    #[error("no FROM instruction")]
    NoStage,
}

/// A target platform the Dockerfile is evaluated for, `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    /// `linux`, `windows`...
    pub os: String,
    /// `amd64`, `arm64`...
    pub arch: String,
    /// `v7`, `v8`... when given.
    pub variant: Option<String>,
}

/// A platform that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid platform {0:?}: expected os/arch or os/arch/variant, e.g. \"linux/arm64\"")]
pub struct PlatformError(pub String);

impl FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.trim().split('/').collect();
        let valid = |p: &&str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(valid) {
            return Err(PlatformError(s.to_owned()));
        }
        let lower = |p: &str| p.to_ascii_lowercase();
        Ok(Self {
            os: lower(parts[0]),
            arch: lower(parts[1]),
            variant: parts.get(2).map(|v| lower(v)),
        })
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl Platform {
    /// The values of the automatic platform args, with `prefix` `TARGET` or `BUILD`.
    fn args(&self, prefix: &str) -> [(&'static str, String); 4] {
        let names: [&'static str; 4] = if prefix == "TARGET" {
            ["TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT"]
        } else {
            ["BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT"]
        };
        [
            (names[0], self.to_string()),
            (names[1], self.os.clone()),
            (names[2], self.arch.clone()),
            (names[3], self.variant.clone().unwrap_or_default()),
        ]
    }
}

/// Parses `content` and returns the images it depends on.
///
/// `arg_overrides` act like `--build-arg`: they replace the value of `ARG`s
/// the file declares (and of BuildKit's automatic platform args such as
/// `TARGETARCH`), never of undeclared names.
///
/// The file is evaluated once per target platform in `platforms` (the first
/// one also stands for the build platform, `BUILDARCH`...) and the results
/// are merged: an image needed on any platform is a dependency. With no
/// platform the platform args are unset and referring to them is a warning.
///
/// Problems with single lines are [`Warning`]s; the rest of the file is still
/// read.
///
/// # Errors
/// [`DockerfileError::NoStage`] when the file has no `FROM` instruction.
pub fn parse_dockerfile(
    content: &str,
    arg_overrides: &BTreeMap<String, String>,
    platforms: &[Platform],
) -> Result<ParsedDockerfile, DockerfileError> {
    let text = content.strip_prefix('\u{feff}').unwrap_or(content);
    let syntax = tokenize(text);
    if !syntax.instructions.iter().any(|i| i.keyword == "FROM") {
        return Err(DockerfileError::NoStage);
    }
    let all_stage_names = stage_names(&syntax.instructions, syntax.escape);
    let walk = |platform: &[(&str, String)]| {
        let mut walker = Walker {
            escape: syntax.escape,
            overrides: arg_overrides,
            all_stage_names: &all_stage_names,
            earlier_stage_names: HashSet::new(),
            global: Scope::predefined(arg_overrides, platform),
            in_stage: false,
            out: ParsedDockerfile::default(),
        };
        for instruction in &syntax.instructions {
            walker.instruction(instruction);
        }
        walker.out
    };
    let mut merged = ParsedDockerfile {
        images: Vec::new(),
        warnings: syntax.warnings.clone(),
    };
    match platforms.split_first() {
        None => merged.merge(walk(&[])),
        Some((build, _)) => {
            for target in platforms {
                let mut values = target.args("TARGET").to_vec();
                values.extend(build.args("BUILD"));
                merged.merge(walk(&values));
            }
        }
    }
    merged.images.sort_by_key(|i| i.line);
    merged.warnings.sort_by_key(|w| w.line);
    Ok(merged)
}

impl ParsedDockerfile {
    /// Adds what `other` found that `self` does not have yet.
    fn merge(&mut self, other: ParsedDockerfile) {
        let mut seen: HashSet<ImageRef> = self.images.iter().cloned().collect();
        self.images
            .extend(other.images.into_iter().filter(|i| seen.insert(i.clone())));
        let mut seen: HashSet<Warning> = self.warnings.iter().cloned().collect();
        self.warnings.extend(
            other
                .warnings
                .into_iter()
                .filter(|w| seen.insert(w.clone())),
        );
    }
}

/// `FROM [--flag...] image [AS name]`, split.
struct FromLine<'a> {
    image: &'a str,
    alias: Option<&'a str>,
}

/// Reads a `FROM`'s arguments; `None` when they are not `image [AS name]`.
fn parse_from(arguments: &str, escape: char) -> Option<FromLine<'_>> {
    let (_, words) = flags(arguments, escape);
    match words.as_slice() {
        [image] => Some(FromLine { image, alias: None }),
        [image, as_, alias] if as_.eq_ignore_ascii_case("as") => Some(FromLine {
            image,
            alias: Some(alias),
        }),
        _ => None,
    }
}

/// Splits leading `--name[=value]` flags from the other words.
fn flags(arguments: &str, escape: char) -> (Vec<(&str, Option<&str>)>, Vec<&str>) {
    let words = split_words(arguments, escape);
    let count = words
        .iter()
        .take_while(|w| w.starts_with("--") && **w != "--")
        .count();
    let flags = words[..count]
        .iter()
        .map(|w| match w[2..].split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (&w[2..], None),
        })
        .collect();
    let rest_start = if words.get(count) == Some(&"--") {
        count + 1
    } else {
        count
    };
    (flags, words[rest_start.min(words.len())..].to_vec())
}

/// Lowercased `AS` names of every stage (BuildKit compares them case-insensitively).
fn stage_names(instructions: &[Instruction], escape: char) -> HashSet<String> {
    instructions
        .iter()
        .filter(|i| i.keyword == "FROM")
        .filter_map(|i| parse_from(&i.arguments, escape)?.alias)
        .map(str::to_lowercase)
        .collect()
}

struct Walker<'o> {
    escape: char,
    overrides: &'o BTreeMap<String, String>,
    all_stage_names: &'o HashSet<String>,
    earlier_stage_names: HashSet<String>,
    global: Scope,
    /// False before the first `FROM`, where `ARG`s are global.
    in_stage: bool,
    out: ParsedDockerfile,
}

impl Walker<'_> {
    fn instruction(&mut self, instruction: &Instruction) {
        let line = instruction.line;
        let arguments = instruction.arguments.as_str();
        match instruction.keyword.as_str() {
            // Stage ARGs only matter to RUN and the like: BuildKit expands
            // neither `--from` nor a mount's `from=`, so they are not tracked.
            "ARG" if !self.in_stage => self.global.declare(arguments, self.escape, self.overrides),
            "FROM" => {
                self.in_stage = true;
                let Some(from) = parse_from(arguments, self.escape) else {
                    self.warn(
                        line,
                        "FROM must be followed by an image and optionally AS <name>: line skipped"
                            .to_owned(),
                    );
                    return;
                };
                // FROM lines only see global args.
                if let Some(image) = self.resolve(from.image, line) {
                    let lower = image.to_lowercase();
                    if lower != "scratch" && !self.earlier_stage_names.contains(&lower) {
                        self.push(image, line, RefKind::From);
                    }
                }
                if let Some(alias) = from.alias {
                    self.earlier_stage_names.insert(alias.to_lowercase());
                }
            }
            "COPY" => {
                let (flags, _) = flags(arguments, self.escape);
                for (_, value) in flags.iter().filter(|(name, _)| *name == "from") {
                    self.flag_from(value.unwrap_or_default(), line, RefKind::CopyFrom);
                }
            }
            "RUN" => {
                let (flags, _) = flags(arguments, self.escape);
                for (_, value) in flags.iter().filter(|(name, _)| *name == "mount") {
                    if let Some(from) = mount_from(&unquote(value.unwrap_or_default())) {
                        self.flag_from(&from, line, RefKind::MountFrom);
                    }
                }
            }
            // ONBUILD triggers run in downstream builds, not this one.
            _ => {}
        }
    }

    /// A `--from` value: an image unless it names a stage or a stage index.
    fn flag_from(&mut self, raw: &str, line: usize, kind: RefKind) {
        let expanded = super::expand::expand(raw, self.escape, &|_| None);
        if expanded.uses_variables {
            let flag = match kind {
                RefKind::MountFrom => "--mount from=",
                _ => "--from",
            };
            self.warn(
                line,
                format!(
                    "cannot use {raw:?}: BuildKit does not expand variables in {flag}; \
                     name the image in a stage (`FROM image AS name`) and use the stage"
                ),
            );
            return;
        }
        let value = expanded.value;
        if value.trim().is_empty() {
            return;
        }
        let lower = value.to_lowercase();
        let is_index = value.bytes().all(|b| b.is_ascii_digit());
        if !is_index && lower != "scratch" && !self.all_stage_names.contains(&lower) {
            self.push(value, line, kind);
        }
    }

    /// Expands a `FROM` image with the global args; on failure records a
    /// warning and returns `None`.
    fn resolve(&mut self, raw: &str, line: usize) -> Option<String> {
        let expanded = self.global.expand(raw, self.escape);
        let problem = if let Some(problem) = expanded.problems.first() {
            problem.clone()
        } else if expanded.value.trim().is_empty() {
            "expands to an empty string".to_owned()
        } else if expanded.value.contains('$') {
            "still contains '$' after expansion".to_owned()
        } else {
            return Some(expanded.value);
        };
        self.warn(
            line,
            format!("cannot resolve image reference {raw:?}: {problem}"),
        );
        None
    }

    fn warn(&mut self, line: usize, message: String) {
        self.out.warnings.push(Warning { line, message });
    }

    fn push(&mut self, reference: String, line: usize, kind: RefKind) {
        self.out.images.push(ImageRef {
            reference,
            line,
            kind,
        });
    }
}

/// Removes the quotes BuildKit strips from flag values.
fn unquote(s: &str) -> String {
    s.chars().filter(|c| *c != '"' && *c != '\'').collect()
}

/// The `from=` of a `--mount` spec whose type can take one (bind, the default, or cache).
fn mount_from(spec: &str) -> Option<String> {
    let mut kind = "bind";
    let mut from = None;
    for field in spec.split(',') {
        match field.trim().split_once('=') {
            Some((key, value)) if key.eq_ignore_ascii_case("type") => kind = value,
            Some((key, value)) if key.eq_ignore_ascii_case("from") => from = Some(value),
            _ => {}
        }
    }
    let takes_from = kind.eq_ignore_ascii_case("bind") || kind.eq_ignore_ascii_case("cache");
    from.filter(|_| takes_from).map(str::to_owned)
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
