use proptest::prelude::*;

use super::*;

fn gitlab() -> Url {
    Url::parse("https://git.example.org/").unwrap()
}

fn paths(content: &str, base: &Url) -> (Vec<(usize, String)>, Vec<usize>) {
    paths_on(content, &InstanceUrls::new(base))
}

fn paths_on(content: &str, instance: &InstanceUrls) -> (Vec<(usize, String)>, Vec<usize>) {
    let (entries, warnings) = parse_deps_file(content, instance);
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
    let (_, w) = parse_deps_file("https://github.com/a/b", &(&gitlab()).into());
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

/// The tool reaches the API at an internal address; files use the public one.
fn internal() -> InstanceUrls {
    let mut urls = InstanceUrls::new(&Url::parse("http://gitlab.internal:8080/").unwrap());
    urls.add_project(
        "group/sub/p",
        "https://gitlab.example.org/group/sub/p",
        Some("https://gitlab.example.org/group/sub/p.git"),
        Some("git@ssh.example.org:group/sub/p.git"),
    );
    urls
}

#[test]
fn public_addresses_of_an_instance_reached_internally() {
    let content = "\
https://gitlab.example.org/group/project
https://GITLAB.example.org/group/sub/project.git
https://gitlab.example.org/group/project/-/tree/main/docker
git@gitlab.example.org:group/ssh-project.git
git@ssh.example.org:group/ssh2.git
ssh://git@ssh.example.org:2222/group/ssh3.git
ssh://git@gitlab.example.org/group/ssh4
http://gitlab.internal:8080/group/internal
https://gitlab.example.org:8443/group/wrong-port
https://other.example.org/group/elsewhere
ssh://git@other.example.org:2222/group/elsewhere.git
git@other.example.org:group/elsewhere.git
";
    let (entries, warnings) = paths_on(content, &internal());
    assert_eq!(
        entries,
        [
            (1, "group/project".to_owned()),
            (2, "group/sub/project".to_owned()),
            (3, "group/project".to_owned()),
            (4, "group/ssh-project".to_owned()),
            (5, "group/ssh2".to_owned()),
            (6, "group/ssh3".to_owned()),
            (7, "group/ssh4".to_owned()),
            (8, "group/internal".to_owned()),
        ]
    );
    assert_eq!(warnings, [9, 10, 11, 12]);
}

#[test]
fn a_relative_root_is_learned_from_web_url() {
    let mut urls = InstanceUrls::new(&Url::parse("http://127.0.0.1:3000/").unwrap());
    urls.add_project(
        "Group/P",
        "https://example.org/gitlab/Group/P",
        Some("https://example.org/gitlab/Group/P.git"),
        Some("ssh://git@example.org:2222/Group/P.git"),
    );
    let content = "\
https://example.org/gitlab/group/project
https://example.org/gitlab/group/project.git/
https://example.org/group/project
ssh://git@example.org:2222/group/by-ssh.git
";
    let (entries, warnings) = paths_on(content, &urls);
    assert_eq!(
        entries,
        [
            (1, "group/project".to_owned()),
            (2, "group/project".to_owned()),
            (4, "group/by-ssh".to_owned()),
        ]
    );
    assert_eq!(warnings, [3]);
}

#[test]
fn project_urls_that_do_not_end_with_the_path_teach_nothing() {
    let base = Url::parse("http://127.0.0.1:3000/").unwrap();
    let mut urls = InstanceUrls::new(&base);
    urls.add_project("g/p", "https://elsewhere.example.org/x/y", None, None);
    urls.add_project("g/p", "not a url", Some("also not"), Some(""));
    assert_eq!(urls, InstanceUrls::new(&base));
    // Stored and read back (the scanner keeps them between scans).
    let json = serde_json::to_string(&internal()).unwrap();
    assert_eq!(
        serde_json::from_str::<InstanceUrls>(&json).unwrap(),
        internal()
    );
}

proptest! {
    #[test]
    fn never_panics(s in any::<String>()) {
        let _ = parse_deps_file(&s, &(&gitlab()).into());
    }

    #[test]
    fn never_panics_on_url_like(s in "((https?://|git@|[a-zA-Z./:#@ -]|/-/|\\.git|\r|\n))*") {
        let _ = parse_deps_file(&s, &(&Url::parse("http://Example.org:8080/root/").unwrap()).into());
    }

    #[test]
    fn whitespace_does_not_matter(
        path in "[a-z][a-z0-9_-]{0,8}(/[a-z][a-z0-9_.-]{0,8}){1,3}",
        pre in "[ \t]{0,3}",
        post in "[ \t]{0,3}",
    ) {
        let (entries, warnings) = parse_deps_file(&format!("{pre}{path}{post}\n"), &(&gitlab()).into());
        prop_assert!(warnings.is_empty());
        let expected = path.strip_suffix(".git").unwrap_or(&path);
        prop_assert_eq!(entries[0].path.as_str(), expected);
    }
}
