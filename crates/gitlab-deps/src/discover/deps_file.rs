//! The `.gitlab-deps` file: one upstream project per line, as a project URL
//! on this GitLab instance or as a `group/project` path.

use serde::Serialize;
use url::Url;

/// One declared upstream project.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct DepsEntry {
    /// 1-based line number.
    pub line: usize,
    /// Full project path as written (case preserved), e.g. `group/sub/project`.
    pub path: String,
}

/// A line that was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct DepsWarning {
    /// 1-based line number.
    pub line: usize,
    /// Human-readable explanation.
    pub message: String,
}

/// Parses a `.gitlab-deps` file. Bad lines become warnings, never errors.
///
/// `gitlab_url` is the instance's base URL; its path (e.g. `/gitlab`) is the
/// relative URL root that project URLs must start with.
#[must_use]
pub fn parse_deps_file(content: &str, gitlab_url: &Url) -> (Vec<DepsEntry>, Vec<DepsWarning>) {
    let mut entries = Vec::new();
    let mut warnings = Vec::new();
    for (index, raw) in content.lines().enumerate() {
        let line = index + 1;
        let text = strip_comment(raw).trim();
        if text.is_empty() {
            continue;
        }
        match parse_line(text, gitlab_url) {
            Ok(path) => entries.push(DepsEntry { line, path }),
            Err(reason) => warnings.push(DepsWarning {
                line,
                message: format!("ignoring {text:?}: {reason}"),
            }),
        }
    }
    (entries, warnings)
}

/// Drops a whole-line `#` comment or a trailing ` # comment`. A `#` glued to
/// text (a URL fragment) is not a comment.
fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    let mut prev_space = false;
    for (i, c) in line.char_indices() {
        if c == '#' && prev_space {
            return &line[..i];
        }
        prev_space = c.is_whitespace();
    }
    line
}

fn parse_line(text: &str, gitlab_url: &Url) -> Result<String, String> {
    let path = if text.contains("://") {
        url_path(text, gitlab_url)?
    } else if let Some((user_host, path)) = scp_like(text) {
        ssh_path(user_host, path, gitlab_url)?
    } else {
        text.to_owned()
    };
    let path = clean_path(&path);
    validate(path)?;
    Ok(path.to_owned())
}

/// The project path of an `http(s)://` URL on this instance.
fn url_path(text: &str, gitlab_url: &Url) -> Result<String, String> {
    let url = Url::parse(text).map_err(|e| format!("invalid URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("unsupported URL scheme {:?}", url.scheme()));
    }
    if !same_host(url.host_str(), gitlab_url.host_str()) || url.port() != gitlab_url.port() {
        return Err(format!(
            "URL is not on this GitLab instance ({})",
            gitlab_url.host_str().unwrap_or_default()
        ));
    }
    let root = gitlab_url.path().trim_end_matches('/');
    let rest = url
        .path()
        .strip_prefix(root)
        .filter(|rest| rest.starts_with('/'))
        .ok_or_else(|| format!("URL is not under {gitlab_url}"))?;
    Ok(rest.to_owned())
}

/// Splits `git@host:group/project.git` into `("git@host", "group/project.git")`.
fn scp_like(text: &str) -> Option<(&str, &str)> {
    let (user_host, path) = text.split_once(':')?;
    user_host.contains('@').then_some((user_host, path))
}

fn ssh_path(user_host: &str, path: &str, gitlab_url: &Url) -> Result<String, String> {
    let host = user_host.rsplit('@').next();
    if same_host(host, gitlab_url.host_str()) {
        Ok(path.to_owned())
    } else {
        Err("SSH URL is not on this GitLab instance".to_owned())
    }
}

fn same_host(a: Option<&str>, b: Option<&str>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b))
}

/// Cuts GitLab's `/-/` route suffix, surrounding slashes and a `.git` suffix.
fn clean_path(path: &str) -> &str {
    let path = path.split_once("/-/").map_or(path, |(p, _)| p);
    let path = path.trim_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    path.trim_end_matches('/')
}

/// GitLab paths: at least `namespace/project`, segments of `[A-Za-z0-9_.-]`.
fn validate(path: &str) -> Result<(), String> {
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() < 2 {
        return Err("expected a project path like group/project".to_owned());
    }
    for segment in segments {
        let valid_chars = segment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if segment.is_empty() || segment == "." || segment == ".." || !valid_chars {
            return Err(format!("invalid path segment {segment:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
