use proptest::prelude::*;

use super::*;

fn gitlab() -> Url {
    Url::parse("https://git.example.org/").unwrap()
}

fn paths(content: &str, base: &Url) -> (Vec<(usize, String)>, Vec<usize>) {
    let (entries, warnings) = parse_deps_file(content, base);
    (
        entries.into_iter().map(|e| (e.line, e.path)).collect(),
        warnings.into_iter().map(|w| w.line).collect(),
    )
}

#[test]
fn url_forms() {
    let content = "\
https://git.example.org/group/project
https://git.example.org/group/sub/project.git
https://git.example.org/group/project/
http://GIT.Example.org/group/project2
https://git.example.org/group/project/-/tree/main
https://git.example.org/group/project.git/
https://git.example.org/group/project?x=1#readme
git@git.example.org:group/ssh-project.git
";
    let (entries, warnings) = paths(content, &gitlab());
    assert_eq!(
        entries,
        [
            (1, "group/project".to_owned()),
            (2, "group/sub/project".to_owned()),
            (3, "group/project".to_owned()),
            (4, "group/project2".to_owned()),
            (5, "group/project".to_owned()),
            (6, "group/project".to_owned()),
            (7, "group/project".to_owned()),
            (8, "group/ssh-project".to_owned()),
        ]
    );
    assert!(warnings.is_empty());
}

#[test]
fn relative_url_root() {
    let base = Url::parse("https://example.org/gitlab/").unwrap();
    let content = "\
https://example.org/gitlab/group/project
https://example.org/group/project
https://example.org/gitlabx/group/project
group/plain
";
    let (entries, warnings) = paths(content, &base);
    assert_eq!(
        entries,
        [
            (1, "group/project".to_owned()),
            (4, "group/plain".to_owned())
        ]
    );
    assert_eq!(warnings, [2, 3]);
    // Without a trailing slash on the base URL too.
    let base = Url::parse("https://example.org/gitlab").unwrap();
    assert_eq!(paths("https://example.org/gitlab/a/b", &base).0.len(), 1);
}

#[test]
fn path_forms_comments_and_whitespace() {
    let content = "# header comment\r\n\r\n  group/project  \r\n/group/sub/project/\r\n\tgroup/x # trailing comment\r\n   # indented comment\r\ngroup/y#not-a-comment\r\n";
    let (entries, warnings) = paths(content, &gitlab());
    assert_eq!(
        entries,
        [
            (3, "group/project".to_owned()),
            (4, "group/sub/project".to_owned()),
            (5, "group/x".to_owned()),
        ]
    );
    // `#` glued to a path is not a comment, and makes the path invalid.
    assert_eq!(warnings, [7]);
}

#[test]
fn implausible_lines_are_warnings() {
    let content = "\
https://github.com/group/project
single
group/with space
group//project
ftp://git.example.org/group/project
https://git.example.org:8443/group/project
https://git.example.org/
https://git.example.org/-/group/x
git@github.com:group/project.git
../group/project
https://[broken
";
    let (entries, warnings) = paths(content, &gitlab());
    assert!(entries.is_empty(), "{entries:?}");
    assert_eq!(warnings, (1..=11).collect::<Vec<_>>());
    let (_, w) = parse_deps_file("https://github.com/a/b", &gitlab());
    assert!(
        w[0].message.contains("not on this GitLab instance"),
        "{w:?}"
    );
}

#[test]
fn case_is_preserved() {
    assert_eq!(
        paths("Group/Project", &gitlab()).0,
        [(1, "Group/Project".to_owned())]
    );
}

proptest! {
    #[test]
    fn never_panics(s in any::<String>()) {
        let _ = parse_deps_file(&s, &gitlab());
    }

    #[test]
    fn never_panics_on_url_like(s in "((https?://|git@|[a-zA-Z./:#@ -]|/-/|\\.git|\r|\n))*") {
        let _ = parse_deps_file(&s, &Url::parse("http://Example.org:8080/root/").unwrap());
    }

    #[test]
    fn whitespace_does_not_matter(
        path in "[a-z][a-z0-9_-]{0,8}(/[a-z][a-z0-9_.-]{0,8}){1,3}",
        pre in "[ \t]{0,3}",
        post in "[ \t]{0,3}",
    ) {
        let (entries, warnings) = parse_deps_file(&format!("{pre}{path}{post}\n"), &gitlab());
        prop_assert!(warnings.is_empty());
        let expected = path.strip_suffix(".git").unwrap_or(&path);
        prop_assert_eq!(entries[0].path.as_str(), expected);
    }
}
