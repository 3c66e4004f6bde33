use super::*;
use crate::process_table::ProcessTable;
use crate::testing::*;
use model::security::SecurityEvent;

fn errors(yaml: &str) -> Vec<String> {
    match RuleSet::from_yaml(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

fn matching(rules: &RuleSet, table: &mut ProcessTable, event: &SecurityEvent) -> Vec<String> {
    let previous = table.get(event.process().pid).cloned();
    table.observe(event);
    let ctx = Context {
        event,
        process: table.get(event.process().pid),
        previous: previous.as_ref(),
        ancestors: table.ancestors(event.process().pid),
    };
    rules.matches(&ctx).iter().map(|r| r.id.clone()).collect()
}

#[test]
fn default_rules_are_valid() {
    let rules = RuleSet::from_yaml(DEFAULT_RULES).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = rules.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "shell-under-server",
            "outbound-port-not-allowed",
            "credential-read-by-non-root-binary",
            "ptrace-attach",
            "module-load",
            "setuid-root-from-user"
        ]
    );
}

#[test]
fn every_error_is_reported_with_its_yaml_path() {
    let found = errors(
        r#"
rules:
  - id: a
    description: d
    severity: urgent
    events: [exec, teleport]
    when:
      file.path: {prefix: /etc}
      process.uid: {prefix: "0"}
      net.remote.port: 80
      process.exe_name: {in: sh}
      process.nonsense: 1
    colour: red
  - id: b
    description: d
    severity: low
    events: [connect]
    when:
      net.remote.ip: {cidr: [10.0.0.0/33], startswith: x}
      net.remote.port: "https"
    summary: "{file.path}"
extra: 1
"#,
    );
    let expected = [
        r#"rules[0].colour: expected one of the keys [id, description, severity, events, when, any, unless, summary, enabled], found unknown key "colour""#,
        r#"rules[0].severity: expected one of info, low, medium, high, critical, found the string "urgent""#,
        r#"rules[0].events[1]: expected one of [exec, exit, connect, accept, file_open, privilege_change, ptrace, module_load], found the string "teleport""#,
        r#"rules[0].when."file.path": expected a field that every listed event carries, found "file.path", which [exec] events lack"#,
        r#"rules[0].when."process.uid".prefix: expected `prefix` on string fields only, found it on a integer field"#,
        r#"rules[0].when."net.remote.port": expected a field that every listed event carries, found "net.remote.port", which [exec] events lack"#,
        r#"rules[0].when."process.exe_name".in: expected a list, found the string "sh""#,
        r#"rules[0].when."process.nonsense": expected a known field"#,
        r#"rules[1].when."net.remote.ip".cidr[0]: expected an address block such as 10.0.0.0/8 or fd00::/8, found "10.0.0.0/33""#,
        r#"rules[1].when."net.remote.ip".startswith: expected an operator"#,
        r#"rules[1].when."net.remote.port": expected an integer value, found the string "https""#,
        r#"rules[1].summary: expected a field that every listed event carries, found "file.path", which [connect] events lack"#,
        r#"extra: expected one of the keys [rules], found unknown key "extra""#,
    ];
    for e in expected {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "missing error {e:?} in\n{}",
            found.join("\n")
        );
    }
    assert_eq!(found.len(), expected.len(), "{}", found.join("\n"));
}

#[test]
fn malformed_yaml_and_missing_keys_are_refused() {
    let found = errors("rules: [\n");
    assert!(found[0].starts_with("expected valid YAML"), "{found:?}");
    let found = errors("rules:\n  - id: x\n");
    assert_eq!(
        found,
        [
            "rules[0]: expected a `description`, found none",
            "rules[0]: expected a `severity`, found none",
            "rules[0]: expected an `events` list, found none"
        ]
    );
    let found = errors(
        "rules:\n  - {id: x, description: d, severity: low, events: [exec]}\n  - {id: x, description: d, severity: low, events: [exec]}\n",
    );
    assert_eq!(
        found,
        [r#"rules[1].id: expected unique rule ids, found "x" again"#]
    );
    assert_eq!(
        errors("{}"),
        ["expected a top-level `rules` list, found none"]
    );
}

#[test]
fn the_starter_rules_match_what_they_describe_and_nothing_benign() {
    let rules = RuleSet::default_rules();
    let mut table = ProcessTable::default();
    // nginx → sh: a shell under a web server; the same shell under sshd is nothing.
    assert!(matching(&rules, &mut table, &exec(10, 1, 1, "/usr/sbin/nginx", 33)).is_empty());
    assert_eq!(
        matching(&rules, &mut table, &exec(11, 10, 2, "/bin/sh", 33)),
        ["shell-under-server"]
    );
    assert!(matching(&rules, &mut table, &exec(20, 1, 3, "/usr/sbin/sshd", 0)).is_empty());
    assert!(matching(&rules, &mut table, &exec(21, 20, 4, "/bin/bash", 1000)).is_empty());
    // Ports: 443 is allowed, 4444 is not, loopback is never judged.
    assert!(matching(&rules, &mut table, &connect(10, 5, "93.184.216.34:443")).is_empty());
    assert_eq!(
        matching(&rules, &mut table, &connect(10, 6, "93.184.216.34:4444")),
        ["outbound-port-not-allowed"]
    );
    assert!(matching(&rules, &mut table, &connect(10, 7, "127.0.0.1:4444")).is_empty());
    assert!(
        matching(
            &rules,
            &mut table,
            &connect(10, 7, "[::ffff:127.0.0.1]:4444")
        )
        .is_empty()
    );
    // /etc/shadow or ~/.ssh by a binary a user owns, not by root's binaries.
    let mut user_binary = exec(30, 1, 8, "/home/eve/bin/grab", 1000);
    if let SecurityEvent::Exec(e) = &mut user_binary {
        e.exe_owner_uid = Some(1000);
    }
    matching(&rules, &mut table, &user_binary);
    assert_eq!(
        matching(
            &rules,
            &mut table,
            &open(30, 9, "/home/bob/.ssh/id_ed25519")
        ),
        ["credential-read-by-non-root-binary"]
    );
    assert_eq!(
        matching(&rules, &mut table, &open(30, 9, "/etc/shadow")),
        ["credential-read-by-non-root-binary"]
    );
    assert!(matching(&rules, &mut table, &open(30, 9, "/etc/passwd")).is_empty());
    assert!(matching(&rules, &mut table, &open(20, 9, "/etc/shadow")).is_empty());
    // A process whose binary's owner is unknown is not accused.
    assert!(matching(&rules, &mut table, &open(99, 9, "/etc/shadow")).is_empty());
    assert_eq!(
        matching(&rules, &mut table, &ptrace_attach(30, 10, 11)),
        ["ptrace-attach"]
    );
    assert_eq!(
        matching(&rules, &mut table, &module_load(30, 11)),
        ["module-load"]
    );
    // uid 1000 → 0 by setuid; root dropping to a user is fine.
    matching(
        &rules,
        &mut table,
        &exec(40, 1, 12, "/usr/local/bin/x", 1000),
    );
    assert_eq!(
        matching(&rules, &mut table, &setuid(40, 12, 0)),
        ["setuid-root-from-user"]
    );
    assert!(matching(&rules, &mut table, &setuid(20, 13, 1000)).is_empty());
}

#[test]
fn summaries_fill_their_fields() {
    let rules = RuleSet::default_rules();
    let mut table = ProcessTable::default();
    table.observe(&exec(10, 1, 1, "/usr/sbin/nginx", 33));
    let event = exec(11, 10, 2, "/bin/sh", 33);
    table.observe(&event);
    let ctx = Context {
        event: &event,
        process: table.get(11),
        previous: None,
        ancestors: table.ancestors(11),
    };
    let rule = &rules.matches(&ctx)[0];
    assert_eq!(
        rule.render_summary(&ctx),
        "shell /bin/sh started under nginx (ancestors: nginx) in container ?"
    );
}

#[test]
fn globs_and_blocks() {
    assert!(glob("/home/*/.ssh/*", "/home/bob/.ssh/id_rsa"));
    assert!(!glob("/home/*/.ssh/*", "/home/bob/ssh/id_rsa"));
    assert!(glob("a?c", "abc") && !glob("a?c", "ac"));
    let block = Cidr {
        network: "10.1.0.0".parse().expect("an address"),
        bits: 16,
    };
    assert!(block.contains("10.1.200.3".parse().expect("an address")));
    assert!(block.contains("::ffff:10.1.0.9".parse().expect("an address")));
    assert!(!block.contains("10.2.0.1".parse().expect("an address")));
}

#[test]
fn docs_rules_md_names_every_field() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/rules.md"))
        .expect("docs/rules.md");
    for name in Field::all_names() {
        let (scope, rest) = name.split_once('.').unwrap_or(("", &name));
        let documented = doc.contains(&format!("`{name}`"))
            || (matches!(scope, "process" | "parent" | "ancestor")
                && doc.contains(&format!("`process.{rest}`")));
        assert!(documented, "docs/rules.md does not mention {name}");
    }
}
