//! YAML → [`RuleSet`], checking everything before anything runs: unknown keys, unknown fields,
//! fields the rule's events do not carry, operators that do not suit a field's type, malformed
//! values. Every problem is collected with its YAML path, not just the first.

use std::fmt;
use std::net::IpAddr;

use model::security::{SecurityEventKind, Severity};
use serde_yaml::Value as Yaml;

use super::{Cidr, Condition, Field, FieldType, Op, Rule, RuleSet, Value};

/// One problem in a rule file, at a YAML path such as `rules[2].when."file.path".prefix`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in a rule file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid rules ({} problems)", self.0.len())?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

const RULE_KEYS: &[&str] = &[
    "id",
    "description",
    "severity",
    "events",
    "when",
    "any",
    "unless",
    "summary",
    "enabled",
];
const OPS: &[&str] = &[
    "eq", "ne", "in", "not_in", "prefix", "suffix", "contains", "glob", "gt", "gte", "lt", "lte",
    "cidr", "not_cidr", "exists",
];

struct Loader {
    errors: Vec<RuleError>,
}

pub(super) fn parse(text: &str) -> Result<RuleSet, RuleErrors> {
    let doc: Yaml = serde_yaml::from_str(text).map_err(|e| {
        RuleErrors(vec![RuleError {
            path: String::new(),
            message: format!("expected valid YAML, {e}"),
        }])
    })?;
    let mut loader = Loader { errors: Vec::new() };
    let rules = loader.document(&doc);
    if loader.errors.is_empty() {
        Ok(RuleSet { rules })
    } else {
        Err(RuleErrors(loader.errors))
    }
}

fn describe(v: &Yaml) -> String {
    match v {
        Yaml::Null => "nothing".into(),
        Yaml::Bool(b) => format!("the boolean {b}"),
        Yaml::Number(n) => format!("the number {n}"),
        Yaml::String(s) => format!("the string {s:?}"),
        Yaml::Sequence(_) => "a list".into(),
        Yaml::Mapping(_) => "a mapping".into(),
        Yaml::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

fn key_path(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if plain {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if parent.is_empty() {
        key
    } else {
        format!("{parent}.{key}")
    }
}

impl Loader {
    fn error(&mut self, path: &str, message: String) {
        self.errors.push(RuleError {
            path: path.to_string(),
            message,
        });
    }

    /// The entries of a mapping with string keys; other keys are errors.
    fn mapping<'y>(&mut self, v: &'y Yaml, path: &str) -> Option<Vec<(String, &'y Yaml)>> {
        let Yaml::Mapping(m) = v else {
            self.error(path, format!("expected a mapping, found {}", describe(v)));
            return None;
        };
        let mut out = Vec::new();
        for (k, v) in m {
            match k {
                Yaml::String(k) => out.push((k.clone(), v)),
                other => self.error(
                    path,
                    format!("expected string keys, found {}", describe(other)),
                ),
            }
        }
        Some(out)
    }

    fn document(&mut self, doc: &Yaml) -> Vec<Rule> {
        let Some(entries) = self.mapping(doc, "") else {
            return Vec::new();
        };
        let mut rules = Vec::new();
        let mut saw_rules = false;
        for (key, value) in entries {
            match key.as_str() {
                "rules" => {
                    saw_rules = true;
                    let Yaml::Sequence(list) = value else {
                        self.error(
                            "rules",
                            format!("expected a list of rules, found {}", describe(value)),
                        );
                        continue;
                    };
                    for (i, item) in list.iter().enumerate() {
                        if let Some(rule) = self.rule(item, &format!("rules[{i}]")) {
                            rules.push(rule);
                        }
                    }
                }
                other => self.error(
                    &key_path("", other),
                    format!("expected one of the keys [rules], found unknown key {other:?}"),
                ),
            }
        }
        if !saw_rules {
            self.error("", "expected a top-level `rules` list, found none".into());
        }
        let mut seen: Vec<&str> = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            if seen.contains(&rule.id.as_str()) {
                self.errors.push(RuleError {
                    path: format!("rules[{i}].id"),
                    message: format!("expected unique rule ids, found {:?} again", rule.id),
                });
            }
            seen.push(&rule.id);
        }
        rules
    }

    fn rule(&mut self, v: &Yaml, path: &str) -> Option<Rule> {
        let before = self.errors.len();
        let entries = self.mapping(v, path)?;
        let get = |k: &str| entries.iter().find(|(key, _)| key == k).map(|(_, v)| *v);
        for (key, _) in &entries {
            if !RULE_KEYS.contains(&key.as_str()) {
                self.error(
                    &key_path(path, key),
                    format!(
                        "expected one of the keys [{}], found unknown key {key:?}",
                        RULE_KEYS.join(", ")
                    ),
                );
            }
        }
        let id = match get("id") {
            Some(Yaml::String(s))
                if !s.is_empty()
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') =>
            {
                s.clone()
            }
            Some(other) => {
                self.error(
                    &key_path(path, "id"),
                    format!(
                        "expected an id of letters, digits, '-', '_' and '.', found {}",
                        describe(other)
                    ),
                );
                String::new()
            }
            None => {
                self.error(path, "expected an `id`, found none".into());
                String::new()
            }
        };
        let description = match get("description") {
            Some(Yaml::String(s)) => s.clone(),
            Some(other) => {
                self.error(
                    &key_path(path, "description"),
                    format!("expected a string, found {}", describe(other)),
                );
                String::new()
            }
            None => {
                self.error(path, "expected a `description`, found none".into());
                String::new()
            }
        };
        let severity = match get("severity") {
            Some(Yaml::String(s)) if Severity::from_name(s).is_some() => {
                Severity::from_name(s).unwrap_or(Severity::Medium)
            }
            Some(other) => {
                self.error(
                    &key_path(path, "severity"),
                    format!(
                        "expected one of info, low, medium, high, critical, found {}",
                        describe(other)
                    ),
                );
                Severity::Medium
            }
            None => {
                self.error(path, "expected a `severity`, found none".into());
                Severity::Medium
            }
        };
        let enabled = match get("enabled") {
            None => true,
            Some(Yaml::Bool(b)) => *b,
            Some(other) => {
                self.error(
                    &key_path(path, "enabled"),
                    format!("expected true or false, found {}", describe(other)),
                );
                true
            }
        };
        let events = self.events(get("events"), path);
        let when = match get("when") {
            Some(v) => self.conditions(v, &key_path(path, "when"), &events),
            None => Vec::new(),
        };
        let any = self.groups(get("any"), &key_path(path, "any"), &events);
        let unless = self.groups(get("unless"), &key_path(path, "unless"), &events);
        let summary = match get("summary") {
            None => None,
            Some(Yaml::String(s)) => {
                self.summary(s, &key_path(path, "summary"), &events);
                Some(s.clone())
            }
            Some(other) => {
                self.error(
                    &key_path(path, "summary"),
                    format!("expected a string, found {}", describe(other)),
                );
                None
            }
        };
        if self.errors.len() > before || !enabled {
            return None;
        }
        Some(Rule {
            id,
            description,
            severity,
            events,
            when,
            any,
            unless,
            summary,
        })
    }

    fn events(&mut self, v: Option<&Yaml>, path: &str) -> Vec<SecurityEventKind> {
        let path = key_path(path, "events");
        let names: Vec<&str> = SecurityEventKind::ALL.iter().map(|k| k.name()).collect();
        let Some(v) = v else {
            self.error(
                &path[..path.len() - ".events".len()],
                "expected an `events` list, found none".into(),
            );
            return Vec::new();
        };
        let Yaml::Sequence(list) = v else {
            self.error(
                &path,
                format!("expected a list of event kinds, found {}", describe(v)),
            );
            return Vec::new();
        };
        if list.is_empty() {
            self.error(
                &path,
                "expected at least one event kind, found an empty list".into(),
            );
        }
        let mut out = Vec::new();
        for (i, item) in list.iter().enumerate() {
            match item {
                Yaml::String(s) if SecurityEventKind::from_name(s).is_some() => {
                    if let Some(k) = SecurityEventKind::from_name(s) {
                        out.push(k);
                    }
                }
                other => self.error(
                    &format!("{path}[{i}]"),
                    format!(
                        "expected one of [{}], found {}",
                        names.join(", "),
                        describe(other)
                    ),
                ),
            }
        }
        out
    }

    fn groups(
        &mut self,
        v: Option<&Yaml>,
        path: &str,
        events: &[SecurityEventKind],
    ) -> Vec<Vec<Condition>> {
        let Some(v) = v else {
            return Vec::new();
        };
        let Yaml::Sequence(list) = v else {
            self.error(
                path,
                format!(
                    "expected a list of condition mappings, found {}",
                    describe(v)
                ),
            );
            return Vec::new();
        };
        list.iter()
            .enumerate()
            .map(|(i, g)| self.conditions(g, &format!("{path}[{i}]"), events))
            .collect()
    }

    fn conditions(&mut self, v: &Yaml, path: &str, events: &[SecurityEventKind]) -> Vec<Condition> {
        let Some(entries) = self.mapping(v, path) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (name, matcher) in entries {
            let path = key_path(path, &name);
            if let Some(c) = self.condition(&name, matcher, &path, events) {
                out.push(c);
            }
        }
        out
    }

    fn field(
        &mut self,
        name: &str,
        path: &str,
        events: &[SecurityEventKind],
    ) -> Option<(Field, FieldType)> {
        let Some((field, ty, carried_by)) = Field::lookup(name) else {
            self.error(
                path,
                format!(
                    "expected a known field (process.*, parent.*, ancestor.*, host, event.kind, exit.*, net.*, file.*, privilege.*, ptrace.*, module.*; see docs/rules.md), found {name:?}"
                ),
            );
            return None;
        };
        let missing: Vec<&str> = events
            .iter()
            .filter(|k| !carried_by.contains(k))
            .map(|k| k.name())
            .collect();
        if !missing.is_empty() {
            self.error(
                path,
                format!(
                    "expected a field that every listed event carries, found {name:?}, which [{}] events lack",
                    missing.join(", ")
                ),
            );
            return None;
        }
        Some((field, ty))
    }

    fn condition(
        &mut self,
        name: &str,
        matcher: &Yaml,
        path: &str,
        events: &[SecurityEventKind],
    ) -> Option<Condition> {
        let (field, ty) = self.field(name, path, events)?;
        let before = self.errors.len();
        let mut ops = Vec::new();
        match matcher {
            // A bare value is shorthand for `eq`.
            Yaml::Mapping(_) => {
                let entries = self.mapping(matcher, path)?;
                if entries.is_empty() {
                    self.error(path, "expected at least one operator, found none".into());
                }
                for (op, arg) in entries {
                    let op_path = key_path(path, &op);
                    if let Some(op) = self.op(&op, arg, &op_path, ty) {
                        ops.push(op);
                    }
                }
            }
            other => {
                if let Some(v) = self.literal(other, path, ty) {
                    ops.push(Op::Eq(v));
                }
            }
        }
        (self.errors.len() == before).then(|| Condition {
            name: name.to_string(),
            field,
            ops,
        })
    }

    fn op(&mut self, op: &str, arg: &Yaml, path: &str, ty: FieldType) -> Option<Op> {
        let wrong_type = |this: &mut Self, expected: &str| {
            this.error(
                path,
                format!(
                    "expected `{op}` on {expected} fields only, found it on a {} field",
                    ty.name()
                ),
            );
            None
        };
        match op {
            "eq" => self.literal(arg, path, ty).map(Op::Eq),
            "ne" => self.literal(arg, path, ty).map(Op::Ne),
            "in" => self.literals(arg, path, ty).map(Op::In),
            "not_in" => self.literals(arg, path, ty).map(Op::NotIn),
            "prefix" | "suffix" | "contains" | "glob" => {
                if ty != FieldType::Str {
                    return wrong_type(self, "string");
                }
                let list = self.strings(arg, path)?;
                Some(match op {
                    "prefix" => Op::Prefix(list),
                    "suffix" => Op::Suffix(list),
                    "contains" => Op::Contains(list),
                    _ => Op::Glob(list),
                })
            }
            "gt" | "gte" | "lt" | "lte" => {
                if ty != FieldType::Int {
                    return wrong_type(self, "integer");
                }
                let Some(n) = arg.as_i64() else {
                    self.error(
                        path,
                        format!("expected an integer, found {}", describe(arg)),
                    );
                    return None;
                };
                Some(match op {
                    "gt" => Op::Gt(n),
                    "gte" => Op::Gte(n),
                    "lt" => Op::Lt(n),
                    _ => Op::Lte(n),
                })
            }
            "cidr" | "not_cidr" => {
                if ty != FieldType::Ip {
                    return wrong_type(self, "ip address");
                }
                let list = self.strings(arg, path)?;
                let mut cidrs = Vec::new();
                for (i, s) in list.iter().enumerate() {
                    let item_path = if matches!(arg, Yaml::Sequence(_)) {
                        format!("{path}[{i}]")
                    } else {
                        path.to_string()
                    };
                    match parse_cidr(s) {
                        Some(c) => cidrs.push(c),
                        None => self.error(
                            &item_path,
                            format!("expected an address block such as 10.0.0.0/8 or fd00::/8, found {s:?}"),
                        ),
                    }
                }
                (cidrs.len() == list.len()).then(|| {
                    if op == "cidr" {
                        Op::Cidr(cidrs)
                    } else {
                        Op::NotCidr(cidrs)
                    }
                })
            }
            "exists" => match arg {
                Yaml::Bool(b) => Some(Op::Exists(*b)),
                other => {
                    self.error(
                        path,
                        format!("expected true or false, found {}", describe(other)),
                    );
                    None
                }
            },
            other => {
                self.error(
                    path,
                    format!(
                        "expected an operator ({}), found unknown key {other:?}",
                        OPS.join(", ")
                    ),
                );
                None
            }
        }
    }

    fn strings(&mut self, v: &Yaml, path: &str) -> Option<Vec<String>> {
        match v {
            Yaml::String(s) => Some(vec![s.clone()]),
            Yaml::Sequence(list) if !list.is_empty() => {
                let mut out = Vec::new();
                for (i, item) in list.iter().enumerate() {
                    match item {
                        Yaml::String(s) => out.push(s.clone()),
                        other => self.error(
                            &format!("{path}[{i}]"),
                            format!("expected a string, found {}", describe(other)),
                        ),
                    }
                }
                (out.len() == list.len()).then_some(out)
            }
            other => {
                self.error(
                    path,
                    format!(
                        "expected a string or a non-empty list of strings, found {}",
                        describe(other)
                    ),
                );
                None
            }
        }
    }

    fn literals(&mut self, v: &Yaml, path: &str, ty: FieldType) -> Option<Vec<Value>> {
        let Yaml::Sequence(list) = v else {
            self.error(path, format!("expected a list, found {}", describe(v)));
            return None;
        };
        if list.is_empty() {
            self.error(path, "expected a non-empty list, found an empty one".into());
            return None;
        }
        let out: Vec<Value> = list
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.literal(item, &format!("{path}[{i}]"), ty))
            .collect();
        (out.len() == list.len()).then_some(out)
    }

    fn literal(&mut self, v: &Yaml, path: &str, ty: FieldType) -> Option<Value> {
        let value = match (ty, v) {
            (FieldType::Str, Yaml::String(s)) => Some(Value::Str(s.clone())),
            (FieldType::Int, Yaml::Number(n)) => n.as_i64().map(Value::Int),
            (FieldType::Bool, Yaml::Bool(b)) => Some(Value::Bool(*b)),
            (FieldType::Ip, Yaml::String(s)) => s
                .parse::<IpAddr>()
                .ok()
                .map(|ip| Value::Ip(ip.to_canonical())),
            _ => None,
        };
        if value.is_none() {
            self.error(
                path,
                format!(
                    "expected a{} {} value, found {}",
                    if ty == FieldType::Int || ty == FieldType::Ip {
                        "n"
                    } else {
                        ""
                    },
                    ty.name(),
                    describe(v)
                ),
            );
        }
        value
    }

    fn summary(&mut self, template: &str, path: &str, events: &[SecurityEventKind]) {
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                self.error(
                    path,
                    format!("expected a closing '}}' after {:?}", &rest[open..]),
                );
                return;
            };
            self.field(&after[..close], path, events);
            rest = &after[close + 1..];
        }
    }
}

fn parse_cidr(s: &str) -> Option<Cidr> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, b.parse::<u8>().ok()?),
        None => (s, if s.contains(':') { 128 } else { 32 }),
    };
    let network: IpAddr = addr.parse().ok()?;
    let max = if network.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some(Cidr { network, bits })
}
