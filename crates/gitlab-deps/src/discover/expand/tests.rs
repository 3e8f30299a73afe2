use super::*;

fn run(word: &str) -> Expanded {
    let lookup = |name: &str| match name {
        "SET" => Some("val"),
        "EMPTY" => Some(""),
        _ => None,
    };
    expand(word, '\\', &lookup)
}

fn ok(word: &str) -> String {
    let e = run(word);
    assert!(e.problems.is_empty(), "{word}: {:?}", e.problems);
    e.value
}

#[test]
fn plain_forms() {
    assert_eq!(ok("a/$SET:1"), "a/val:1");
    assert_eq!(ok("a/${SET}:1"), "a/val:1");
    assert_eq!(ok("x${EMPTY}y"), "xy");
    assert_eq!(ok("no vars"), "no vars");
}

#[test]
fn default_and_alternative_forms() {
    assert_eq!(ok("${UNSET:-d}"), "d");
    assert_eq!(ok("${EMPTY:-d}"), "d");
    assert_eq!(ok("${EMPTY-d}"), "");
    assert_eq!(ok("${UNSET-d}"), "d");
    assert_eq!(ok("${SET:-d}"), "val");
    assert_eq!(ok("${SET:+alt}"), "alt");
    assert_eq!(ok("${EMPTY:+alt}"), "");
    assert_eq!(ok("${EMPTY+alt}"), "alt");
    assert_eq!(ok("${UNSET:+alt}"), "");
    assert_eq!(ok("${SET:?boom}"), "val");
    assert_eq!(ok("${UNSET:-${SET}-x}"), "val-x");
}

#[test]
fn unset_reports_problems() {
    assert_eq!(run("$UNSET").problems, ["ARG UNSET has no value"]);
    assert_eq!(run("${UNSET}").problems, ["ARG UNSET has no value"]);
    assert_eq!(run("${UNSET:?x}").problems, ["ARG UNSET has no value"]);
    // The unused branch's problems are not reported.
    assert!(run("${SET:-$UNSET}").problems.is_empty());
    assert!(!run("${UNSET:-$OTHER}").problems.is_empty());
}

#[test]
fn unsupported_and_malformed() {
    let e = run("${SET#v}");
    assert_eq!(e.value, "${SET#v}");
    assert_eq!(e.problems.len(), 1);
    assert!(!run("${SET").problems.is_empty());
    assert!(!run("${SET:-x").problems.is_empty());
    assert!(!run("${}").problems.is_empty());
    assert!(!run("'abc").problems.is_empty());
    assert!(!run("\"abc").problems.is_empty());
}

#[test]
fn quotes_and_escapes() {
    assert_eq!(ok("'$SET'"), "$SET");
    assert_eq!(ok("\"$SET x\""), "val x");
    assert_eq!(ok(r"a\$SET"), "a$SET");
    assert_eq!(ok(r"trailing\"), r"trailing\");
    assert_eq!(ok("lone$"), "lone$");
    assert_eq!(expand("a`$b", '`', &|_| None).value, "a$b");
}
