use super::*;

fn run(word: &str) -> Expanded {
    let lookup = |name: &str| match name {
        "SET" => Some("val"),
        "EMPTY" => Some(""),
        "V" => Some("3.20.1-alpine"),
        "P" => Some("a*b?c"),
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
fn trims_shortest_and_longest() {
    assert_eq!(ok("${V%.*}"), "3.20");
    assert_eq!(ok("${V%%.*}"), "3");
    assert_eq!(ok("${V#*.}"), "20.1-alpine");
    assert_eq!(ok("${V##*.}"), "1-alpine");
    assert_eq!(ok("${V%-alpine}"), "3.20.1");
    assert_eq!(ok("${V#3.2?}"), ".1-alpine");
    assert_eq!(ok("${V%nomatch}"), "3.20.1-alpine");
    assert_eq!(ok("${V#}"), "3.20.1-alpine");
    assert_eq!(ok("${V##*}"), "");
    assert_eq!(ok("${V%*}"), "3.20.1-alpine");
    // A colon changes nothing for trims (BuildKit accepts it).
    assert_eq!(ok("${V:%.*}"), "3.20");
    // Escaped and quoted glob characters.
    assert_eq!(ok(r"${P#a\*}"), "b?c");
    assert_eq!(ok(r"${P%\?c}"), "a*b");
    assert_eq!(ok("${P#a?}"), "b?c");
    // The pattern may itself use variables.
    assert_eq!(ok("${V%-$SET}"), "3.20.1-alpine");
    assert_eq!(ok("${SET%${SET#v}}"), "v");
}

#[test]
fn replacements_first_and_all() {
    assert_eq!(ok("${V/./-}"), "3-20.1-alpine");
    assert_eq!(ok("${V//./-}"), "3-20-1-alpine");
    assert_eq!(ok("${V/-*/}"), "3.20.1");
    assert_eq!(ok("${V/alpine}"), "3.20.1-");
    assert_eq!(ok("${V/nomatch/x}"), "3.20.1-alpine");
    assert_eq!(ok(r"${V//\./\/}"), "3/20/1-alpine");
    // Greedy: the longest match at the leftmost position.
    assert_eq!(ok("${V/2*1/x}"), "3.x-alpine");
    // Empty matches, as Go's regexp replaces them.
    assert_eq!(ok("${SET//*(/-}"), "val");
    assert_eq!(ok(r"${SET//\x/-}"), "val");
    assert_eq!(ok("${SET///-}"), "-v-a-l-");
    // `/#` and `/%` are not anchors in BuildKit: they are part of the pattern.
    assert_eq!(ok("${V/#3/4}"), "3.20.1-alpine");
}

#[test]
fn trims_and_replacements_of_unset_variables_are_problems() {
    assert_eq!(run("${UNSET%.*}").problems, ["ARG UNSET has no value"]);
    assert_eq!(run("${UNSET//a/b}").problems, ["ARG UNSET has no value"]);
    assert!(
        run("${V%.*")
            .problems
            .contains(&"unterminated ${...}".to_owned())
    );
}

#[test]
fn uses_variables_is_set_by_any_reference() {
    assert!(!run("plain:1").uses_variables);
    assert!(!run("lone$").uses_variables);
    assert!(!run(r"a\$b").uses_variables);
    assert!(run("$UNSET").uses_variables);
    assert!(run("${SET}").uses_variables);
    assert!(run("x${UNSET:+y}").uses_variables);
}

#[test]
fn glob_matching() {
    let glob = |p: &str| Glob::new(&p.chars().map(|c| (c, false)).collect::<Vec<_>>());
    let m = |p: &str, s: &str| glob(p).matches(&s.chars().collect::<Vec<_>>());
    assert!(m("", ""));
    assert!(m("*", ""));
    assert!(m("a*c", "abbbc"));
    assert!(m("a*b*c", "aXbYbZc"));
    assert!(!m("a*b*c", "aXbYbZ"));
    assert!(m("?", "é"));
    assert!(!m("?", ""));
    assert!(m("**", "x"));
}

#[test]
fn unsupported_and_malformed() {
    let e = run("${SET:1}");
    assert_eq!(e.value, "${SET:1}");
    assert_eq!(e.problems.len(), 1);
    assert!(!run("${#SET}").problems.is_empty());
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

#[test]
fn pathological_input_is_a_problem_not_a_hang_or_overflow() {
    let deep = "${A:-".repeat(100_000) + &"}".repeat(100_000);
    assert!(!run(&deep).problems.is_empty());
    let long = "x".repeat(100_000);
    let lookup = |name: &str| (name == "L").then_some(long.as_str());
    let e = expand("${L//*x*y*/z}", '\\', &lookup);
    assert!(e.problems[0].contains("more than"), "{:?}", e.problems);
    // Just under the limit it still works.
    let long = "x".repeat(MAX_PATTERN_INPUT);
    let lookup = |name: &str| (name == "L").then_some(long.as_str());
    assert_eq!(expand("${L//*x*y*/z}", '\\', &lookup).value, long);
    assert_eq!(expand("${L##*x}", '\\', &lookup).value, "");
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn with_value<'v>(value: &'v str) -> impl Fn(&str) -> Option<&'v str> {
        move |name: &str| (name == "V").then_some(value)
    }

    proptest! {
        #[test]
        fn never_panics(word in "([$#%/{}*?:+\\-`\\\\\"' ]|V|[a-z0-9.])*", value in "[a-z0-9.*?/-]{0,12}") {
            let lookup = with_value(&value);
            let _ = expand(&word, '\\', &lookup);
            let _ = expand(&word, '`', &lookup);
        }

        #[test]
        fn trims_keep_a_prefix_or_suffix(
            value in "[a-c.]{0,12}",
            pattern in "[a-c.*?]{0,5}",
            longest in any::<bool>(),
        ) {
            let lookup = with_value(&value);
            let double = if longest { "#" } else { "" };
            let prefix_cut = expand(&format!("${{V#{double}{pattern}}}"), '\\', &lookup);
            prop_assert!(prefix_cut.problems.is_empty());
            prop_assert!(value.ends_with(&prefix_cut.value));
            let double = if longest { "%" } else { "" };
            let suffix_cut = expand(&format!("${{V%{double}{pattern}}}"), '\\', &lookup);
            prop_assert!(suffix_cut.problems.is_empty());
            prop_assert!(value.starts_with(&suffix_cut.value));
            // A pattern without wildcards removes exactly itself, or nothing.
            if !pattern.contains(['*', '?']) {
                let expected = value.strip_prefix(pattern.as_str()).unwrap_or(&value);
                prop_assert_eq!(&prefix_cut.value, expected);
            }
        }

        #[test]
        fn literal_replace_all_matches_str_replace(
            value in "[a-c]{0,12}",
            pattern in "[a-c]{1,3}",
            replacement in "[x-z]{0,2}",
        ) {
            let lookup = with_value(&value);
            let e = expand(&format!("${{V//{pattern}/{replacement}}}"), '\\', &lookup);
            prop_assert_eq!(e.value, value.replace(&pattern, &replacement));
            let e = expand(&format!("${{V/{pattern}/{replacement}}}"), '\\', &lookup);
            prop_assert_eq!(e.value, value.replacen(&pattern, &replacement, 1));
        }
    }
}
