use super::*;

/// `(line, keyword, arguments)` of every instruction.
fn instructions(text: &str) -> Vec<(usize, String, String)> {
    tokenize(text)
        .instructions
        .into_iter()
        .map(|i| (i.line, i.keyword, i.arguments))
        .collect()
}

fn inst(line: usize, keyword: &str, arguments: &str) -> (usize, String, String) {
    (line, keyword.to_owned(), arguments.to_owned())
}

#[test]
fn continuations_skip_comments_and_blank_lines() {
    assert_eq!(
        instructions("from a \\\n# c\n\n  AS b\nRUN x \\  \n y\n"),
        [inst(1, "FROM", "a   AS b"), inst(5, "RUN", "x  y")]
    );
}

#[test]
fn continuation_at_end_of_file() {
    assert_eq!(instructions("FROM a \\"), [inst(1, "FROM", "a")]);
}

#[test]
fn escape_directive_only_at_the_top() {
    let s = tokenize("# syntax=docker/dockerfile:1\n# escape=`\nFROM a `\n b\n");
    assert_eq!(s.escape, '`');
    assert_eq!(s.instructions.len(), 1);
    assert_eq!(s.instructions[0].arguments, "a  b");
    // After an instruction a directive is just a comment.
    assert_eq!(tokenize("FROM a\n# escape=`\n").escape, '\\');
    // After a blank line too.
    assert_eq!(tokenize("\n# escape=`\nFROM a\n").escape, '\\');
}

#[test]
fn invalid_escape_directive_is_a_warning() {
    let s = tokenize("# escape=x\nFROM a\n");
    assert_eq!(s.escape, '\\');
    assert_eq!(s.warnings.len(), 1);
    assert_eq!(s.warnings[0].line, 1);
}

#[test]
fn crlf_lines() {
    assert_eq!(
        instructions("FROM a \\\r\n  AS b\r\nRUN <<EOF\r\nx\r\nEOF\r\nARG c\r\n"),
        [
            inst(1, "FROM", "a   AS b"),
            inst(3, "RUN", "<<EOF"),
            inst(6, "ARG", "c")
        ]
    );
}

#[test]
fn heredoc_words() {
    let h = |name: &str, strip_tabs: bool| Heredoc {
        name: name.to_owned(),
        strip_tabs,
    };
    assert_eq!(
        heredocs(
            r#"cat <<EOF >> /x 5<<-F <<"Q" <<'R' <<<here << "<<no""#,
            '\\'
        ),
        [h("EOF", false), h("F", true), h("Q", false), h("R", false)]
    );
}

#[test]
fn unknown_instructions_are_warnings_with_lines() {
    let s = tokenize("FROM a\nhello world\nFROM b\n");
    assert_eq!(s.instructions.len(), 2);
    assert_eq!(s.warnings.len(), 1);
    assert_eq!(s.warnings[0].line, 2);
    assert!(s.warnings[0].message.contains("\"HELLO\""));
}

#[test]
fn onbuild_heredocs_are_bodies() {
    assert_eq!(
        instructions("FROM a\nONBUILD RUN <<EOF\nFROM b\nEOF\n"),
        [inst(1, "FROM", "a"), inst(2, "ONBUILD", "RUN <<EOF")]
    );
}

#[test]
fn long_names_are_truncated_in_messages() {
    let s = tokenize(&format!("{}\nFROM a\n", "X".repeat(500)));
    assert!(s.warnings[0].message.len() < 100);
}

#[test]
fn many_unterminated_heredocs_stay_linear() {
    // Each unterminated heredoc used to rescan the rest of the file.
    let text = "FROM a\n".to_owned() + &"RUN <<EOF\n".repeat(50_000);
    let s = tokenize(&text);
    assert_eq!(s.instructions.len(), 50_001);
    assert_eq!(s.warnings.len(), 50_000);
}
