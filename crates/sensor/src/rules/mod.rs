//! The rule language (documented in `docs/rules.md`): each rule names the events it looks at and
//! conditions on their fields, on the process's parent and ancestors, and on its container. A
//! rule set is validated as a whole when it is loaded; every error is reported with its YAML path.

mod fields;
mod load;

use std::net::IpAddr;
use std::path::Path;

use model::security::{SecurityEventKind, Severity};

pub use fields::{Context, Field, FieldType, Value};
pub use load::{RuleError, RuleErrors};

/// The starter rules shipped with oxeye (`rules/default.yaml`).
pub const DEFAULT_RULES: &str = include_str!("../../../../rules/default.yaml");

/// A validated set of rules.
#[derive(Clone, Debug, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pub severity: Severity,
    pub events: Vec<SecurityEventKind>,
    /// All of these hold.
    pub when: Vec<Condition>,
    /// At least one of these groups holds (every condition in it); empty: no constraint.
    pub any: Vec<Vec<Condition>>,
    /// None of these groups holds.
    pub unless: Vec<Vec<Condition>>,
    /// `{field}` placeholders filled from the event.
    pub summary: Option<String>,
}

/// A test on one field; every operator must hold.
#[derive(Clone, Debug)]
pub struct Condition {
    pub name: String,
    pub field: Field,
    pub ops: Vec<Op>,
}

#[derive(Clone, Debug)]
pub enum Op {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    NotIn(Vec<Value>),
    Prefix(Vec<String>),
    Suffix(Vec<String>),
    Contains(Vec<String>),
    Glob(Vec<String>),
    Gt(i64),
    Gte(i64),
    Lt(i64),
    Lte(i64),
    Cidr(Vec<Cidr>),
    NotCidr(Vec<Cidr>),
    Exists(bool),
}

/// An address block, `10.0.0.0/8` or `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub network: IpAddr,
    pub bits: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl RuleSet {
    /// Parses and validates YAML rule text; `Err` lists every problem found.
    pub fn from_yaml(text: &str) -> Result<RuleSet, RuleErrors> {
        load::parse(text)
    }

    /// Reads and validates a rule file.
    pub fn load(path: &Path) -> Result<RuleSet, RuleErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            RuleErrors(vec![RuleError {
                path: String::new(),
                message: format!("expected a readable rule file at {}, {e}", path.display()),
            }])
        })?;
        Self::from_yaml(&text)
    }

    /// The starter rules.
    pub fn default_rules() -> RuleSet {
        // The shipped file is checked by `default_rules_are_valid`; an invalid one cannot ship.
        Self::from_yaml(DEFAULT_RULES).unwrap_or_default()
    }

    /// Adds the rules of `other`; an id already present is refused.
    pub fn extend(&mut self, other: RuleSet) -> Result<(), RuleErrors> {
        let mut errors = Vec::new();
        for rule in other.rules {
            if self.rules.iter().any(|r| r.id == rule.id) {
                errors.push(RuleError {
                    path: String::new(),
                    message: format!("expected unique rule ids, found {:?} twice", rule.id),
                });
            } else {
                self.rules.push(rule);
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(RuleErrors(errors))
        }
    }

    /// The rules that match the event in `ctx`.
    pub fn matches<'r>(&'r self, ctx: &Context<'_>) -> Vec<&'r Rule> {
        let kind = ctx.event.kind();
        self.rules
            .iter()
            .filter(|r| r.events.contains(&kind) && r.matches(ctx))
            .collect()
    }
}

impl Rule {
    pub fn matches(&self, ctx: &Context<'_>) -> bool {
        let all = |group: &[Condition]| group.iter().all(|c| c.holds(ctx));
        all(&self.when)
            && (self.any.is_empty() || self.any.iter().any(|g| all(g)))
            && !self.unless.iter().any(|g| all(g))
    }

    /// The summary with its `{field}` placeholders filled (`?` where a value is unknown).
    pub fn render_summary(&self, ctx: &Context<'_>) -> String {
        let Some(template) = &self.summary else {
            return self.description.clone();
        };
        let mut out = String::new();
        let mut rest = template.as_str();
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                out.push_str(&rest[open..]);
                return out;
            };
            let name = &after[..close];
            match Field::lookup(name) {
                Some((field, _, _)) => {
                    let values = ctx.values(field);
                    if values.is_empty() {
                        out.push('?');
                    } else {
                        let text: Vec<String> = values.iter().map(ToString::to_string).collect();
                        out.push_str(&text.join(","));
                    }
                }
                None => out.push_str(&rest[open..open + close + 2]),
            }
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }
}

impl Condition {
    pub fn holds(&self, ctx: &Context<'_>) -> bool {
        let values = ctx.values(self.field);
        let mut value_ops = Vec::new();
        for op in &self.ops {
            match op {
                Op::Exists(want) => {
                    if values.is_empty() == *want {
                        return false;
                    }
                }
                other => value_ops.push(other),
            }
        }
        if value_ops.is_empty() {
            return true;
        }
        // Unknown values match nothing: a rule about a binary's owner says nothing of a binary
        // whose owner is unknown.
        values
            .iter()
            .any(|v| value_ops.iter().all(|op| op_holds(op, v)))
    }
}

fn op_holds(op: &Op, v: &Value) -> bool {
    let text = |v: &Value| match v {
        Value::Str(s) => Some(s.clone()),
        _ => None,
    };
    let int = |v: &Value| match v {
        Value::Int(i) => Some(*i),
        _ => None,
    };
    match op {
        Op::Eq(want) => v == want,
        Op::Ne(want) => v != want,
        Op::In(list) => list.contains(v),
        Op::NotIn(list) => !list.contains(v),
        Op::Prefix(list) => text(v).is_some_and(|s| list.iter().any(|p| s.starts_with(p))),
        Op::Suffix(list) => text(v).is_some_and(|s| list.iter().any(|p| s.ends_with(p))),
        Op::Contains(list) => text(v).is_some_and(|s| list.iter().any(|p| s.contains(p))),
        Op::Glob(list) => text(v).is_some_and(|s| list.iter().any(|p| glob(p, &s))),
        Op::Gt(n) => int(v).is_some_and(|i| i > *n),
        Op::Gte(n) => int(v).is_some_and(|i| i >= *n),
        Op::Lt(n) => int(v).is_some_and(|i| i < *n),
        Op::Lte(n) => int(v).is_some_and(|i| i <= *n),
        Op::Cidr(list) => matches!(v, Value::Ip(ip) if list.iter().any(|c| c.contains(*ip))),
        Op::NotCidr(list) => matches!(v, Value::Ip(ip) if !list.iter().any(|c| c.contains(*ip))),
        Op::Exists(_) => true,
    }
}

/// `*` matches any run of characters (slashes included), `?` one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests;
