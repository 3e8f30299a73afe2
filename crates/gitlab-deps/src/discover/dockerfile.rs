//! Extracts the images a Dockerfile depends on.
//!
//! Tokenising (continuations, the escape directive, comments, heredocs) is
//! left to `parse-dockerfile`; this module applies Docker's semantics on top:
//! stage names, `scratch`, `ARG` expansion and the `--from` forms.

use std::collections::{BTreeMap, HashSet};

use parse_dockerfile::{Flag, Instruction};
use serde::Serialize;

use super::args::Scope;

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
    /// Image dependencies in file order (duplicates kept).
    pub images: Vec<ImageRef>,
    /// References that could not be resolved, in file order.
    pub warnings: Vec<Warning>,
}

/// A Dockerfile that cannot be parsed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DockerfileError {
    /// A syntax error (unknown instruction, missing argument, unterminated heredoc...).
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line where the error was detected.
        line: usize,
        /// The parser's description.
        message: String,
    },
    /// The file has no `FROM` instruction.
    #[error("no FROM instruction")]
    NoStage,
}

/// Parses `content` and returns the images it depends on.
///
/// `arg_overrides` act like `--build-arg`: they replace the value of `ARG`s
/// the file declares (and of BuildKit's predefined platform args such as
/// `TARGETARCH`), never of undeclared names.
///
/// # Errors
/// [`DockerfileError`] when the file is not a valid Dockerfile.
pub fn parse_dockerfile(
    content: &str,
    arg_overrides: &BTreeMap<String, String>,
) -> Result<ParsedDockerfile, DockerfileError> {
    // Strip the BOM ourselves so that spans index into `text`.
    let text = content.strip_prefix('\u{feff}').unwrap_or(content);
    let file = parse_dockerfile::parse(text).map_err(|e| match e.line() {
        0 => DockerfileError::NoStage,
        line => DockerfileError::Syntax {
            line,
            message: format!("{e:#}"),
        },
    })?;
    let escape = file
        .parser_directives
        .escape
        .as_ref()
        .map_or('\\', |d| d.value.value);

    let mut walker = Walker {
        lines: LineIndex::new(text),
        escape,
        overrides: arg_overrides,
        all_stage_names: stage_names(&file.instructions),
        earlier_stage_names: HashSet::new(),
        global: Scope::predefined(arg_overrides),
        stage: None,
        out: ParsedDockerfile::default(),
    };
    for instruction in &file.instructions {
        walker.instruction(instruction);
    }
    Ok(walker.out)
}

/// Lowercased `AS` names of every stage (Docker compares them case-insensitively).
fn stage_names(instructions: &[Instruction<'_>]) -> HashSet<String> {
    instructions
        .iter()
        .filter_map(|i| match i {
            Instruction::From(from) => from.as_.as_ref(),
            _ => None,
        })
        .map(|(_, name)| name.value.to_lowercase())
        .collect()
}

struct Walker<'o> {
    lines: LineIndex,
    escape: char,
    overrides: &'o BTreeMap<String, String>,
    all_stage_names: HashSet<String>,
    earlier_stage_names: HashSet<String>,
    global: Scope,
    /// `None` before the first `FROM`.
    stage: Option<Scope>,
    out: ParsedDockerfile,
}

impl Walker<'_> {
    fn instruction(&mut self, instruction: &Instruction<'_>) {
        match instruction {
            Instruction::Arg(arg) => {
                let words = &arg.arguments.value;
                match &mut self.stage {
                    Some(stage) => {
                        stage.declare(words, self.escape, self.overrides, Some(&self.global));
                    }
                    None => self
                        .global
                        .declare(words, self.escape, self.overrides, None),
                }
            }
            Instruction::From(from) => {
                let line = self.lines.line(from.from.span.start);
                // FROM lines only see global args.
                if let Some(image) = self.resolve(&from.image.value, line, false) {
                    let lower = image.to_lowercase();
                    if lower != "scratch" && !self.earlier_stage_names.contains(&lower) {
                        self.push(image, line, RefKind::From);
                    }
                }
                if let Some((_, name)) = &from.as_ {
                    self.earlier_stage_names.insert(name.value.to_lowercase());
                }
                self.stage = Some(self.global.clone());
            }
            Instruction::Copy(copy) => {
                let line = self.lines.line(copy.copy.span.start);
                for value in flag_values(&copy.options, "from") {
                    self.flag_from(value, line, RefKind::CopyFrom);
                }
            }
            Instruction::Run(run) => {
                let line = self.lines.line(run.run.span.start);
                for mount in flag_values(&run.options, "mount") {
                    if let Some(value) = mount_from(mount) {
                        self.flag_from(value, line, RefKind::MountFrom);
                    }
                }
            }
            // ONBUILD triggers run in downstream builds, not this one.
            _ => {}
        }
    }

    /// A `--from` value: an image unless it names a stage or a stage index.
    fn flag_from(&mut self, raw: &str, line: usize, kind: RefKind) {
        let Some(value) = self.resolve(raw, line, true) else {
            return;
        };
        let lower = value.to_lowercase();
        let is_index = value.bytes().all(|b| b.is_ascii_digit());
        if !is_index && lower != "scratch" && !self.all_stage_names.contains(&lower) {
            self.push(value, line, kind);
        }
    }

    /// Expands `raw`; on failure records a warning and returns `None`.
    fn resolve(&mut self, raw: &str, line: usize, in_stage: bool) -> Option<String> {
        let scope = match (&self.stage, in_stage) {
            (Some(stage), true) => stage,
            _ => &self.global,
        };
        let expanded = scope.expand(raw, self.escape);
        let problem = if let Some(problem) = expanded.problems.first() {
            problem.clone()
        } else if expanded.value.trim().is_empty() {
            "expands to an empty string".to_owned()
        } else if expanded.value.contains('$') {
            "still contains '$' after expansion".to_owned()
        } else {
            return Some(expanded.value);
        };
        self.out.warnings.push(Warning {
            line,
            message: format!("cannot resolve image reference {raw:?}: {problem}"),
        });
        None
    }

    fn push(&mut self, reference: String, line: usize, kind: RefKind) {
        self.out.images.push(ImageRef {
            reference,
            line,
            kind,
        });
    }
}

/// Values of every `--name=value` flag.
fn flag_values<'f>(flags: &'f [Flag<'_>], name: &'f str) -> impl Iterator<Item = &'f str> {
    flags
        .iter()
        .filter(move |f| f.name.value == name)
        .filter_map(|f| f.value.as_ref().map(|v| &*v.value))
}

/// The `from=` of a `--mount` spec whose type can take one (bind, the default, or cache).
fn mount_from(spec: &str) -> Option<&str> {
    let mut kind = "bind";
    let mut from = None;
    for field in spec.split(',') {
        // BuildKit reads the spec as CSV, so fields may be double-quoted.
        let field = field.trim();
        let field = field
            .strip_prefix('"')
            .and_then(|f| f.strip_suffix('"'))
            .unwrap_or(field);
        match field.split_once('=') {
            Some((key, value)) if key.eq_ignore_ascii_case("type") => kind = value,
            Some((key, value)) if key.eq_ignore_ascii_case("from") => from = Some(value),
            _ => {}
        }
    }
    let takes_from = kind.eq_ignore_ascii_case("bind") || kind.eq_ignore_ascii_case("cache");
    from.filter(|_| takes_from)
}

/// Maps byte offsets to 1-based line numbers.
struct LineIndex {
    newlines: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let newlines = text
            .bytes()
            .enumerate()
            .filter_map(|(i, b)| (b == b'\n').then_some(i))
            .collect();
        Self { newlines }
    }

    fn line(&self, offset: usize) -> usize {
        self.newlines.partition_point(|&nl| nl < offset) + 1
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
