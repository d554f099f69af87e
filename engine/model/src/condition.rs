//! The small condition language of `visible_when` and `required_when`.
//!
//! ```text
//! priority == 'urgent'
//! category in ['hvac', 'elevator'] && !resolved
//! floor >= 10 || building == "north_wing"
//! ```
//!
//! Deliberately tiny (no function calls, no arithmetic) so that it can be checked
//! statically (every name must be a field of the form), evaluated on the server
//! and shipped to a browser as JSON to be evaluated there too.

use serde::Serialize;
use serde_json::Value;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Condition {
    /// The field has a value that is not empty, zero or false.
    Truthy {
        field: String,
    },
    Not {
        arg: Box<Condition>,
    },
    And {
        args: Vec<Condition>,
    },
    Or {
        args: Vec<Condition>,
    },
    Compare {
        field: String,
        cmp: Cmp,
        value: Value,
    },
    In {
        field: String,
        values: Vec<Value>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Cmp {
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

/// A parse error with the character offset it happened at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionError {
    pub offset: usize,
    pub message: String,
}

impl Condition {
    pub fn parse(src: &str) -> Result<Condition, ConditionError> {
        let tokens = lex(src)?;
        let mut p = Parser { tokens, at: 0, depth: 0 };
        let cond = p.or()?;
        if let Some((off, tok)) = p.tokens.get(p.at) {
            return Err(ConditionError { offset: *off, message: format!("unexpected `{}`", tok.text()) });
        }
        Ok(cond)
    }

    /// Every field the condition reads.
    pub fn fields(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_fields(&mut out);
        out
    }

    fn collect_fields<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Condition::Truthy { field } | Condition::Compare { field, .. } | Condition::In { field, .. } => out.push(field),
            Condition::Not { arg } => arg.collect_fields(out),
            Condition::And { args } | Condition::Or { args } => args.iter().for_each(|a| a.collect_fields(out)),
        }
    }

    /// Evaluates against form data (a JSON object). Missing fields are null.
    pub fn eval(&self, data: &Value) -> bool {
        self.eval_by(&|f| data.get(f))
    }

    /// Evaluates against the fields of a map (no copy into a JSON object).
    pub fn eval_map(&self, data: &serde_json::Map<String, Value>) -> bool {
        self.eval_by(&|f| data.get(f))
    }

    /// Evaluates with `lookup` giving each field's value (missing: null).
    pub fn eval_by<'a>(&self, lookup: &dyn Fn(&str) -> Option<&'a Value>) -> bool {
        let get = |f: &str| lookup(f).unwrap_or(&Value::Null);
        match self {
            Condition::Truthy { field } => truthy(get(field)),
            Condition::Not { arg } => !arg.eval_by(lookup),
            Condition::And { args } => args.iter().all(|a| a.eval_by(lookup)),
            Condition::Or { args } => args.iter().any(|a| a.eval_by(lookup)),
            Condition::In { field, values } => {
                let v = get(field);
                match v {
                    Value::Array(items) => items.iter().any(|i| values.iter().any(|x| json_eq(i, x))),
                    _ => values.iter().any(|x| json_eq(v, x)),
                }
            }
            Condition::Compare { field, cmp, value } => {
                let v = get(field);
                match cmp {
                    // A multiple-choice field "equals" an option when it contains it.
                    Cmp::Eq => match v {
                        Value::Array(items) if !value.is_array() => items.iter().any(|i| json_eq(i, value)),
                        _ => json_eq(v, value),
                    },
                    Cmp::Ne => match v {
                        Value::Array(items) if !value.is_array() => !items.iter().any(|i| json_eq(i, value)),
                        _ => !json_eq(v, value),
                    },
                    Cmp::Lt | Cmp::Le | Cmp::Gt | Cmp::Ge => {
                        let ord = match (v, value) {
                            (Value::Number(a), Value::Number(b)) => a.as_f64().zip(b.as_f64()).and_then(|(a, b)| a.partial_cmp(&b)),
                            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                            _ => None,
                        };
                        match ord {
                            None => false,
                            Some(o) => match cmp {
                                Cmp::Lt => o.is_lt(),
                                Cmp::Le => o.is_le(),
                                Cmp::Gt => o.is_gt(),
                                _ => o.is_ge(),
                            },
                        }
                    }
                }
            }
        }
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Lit(Value),
    Op(&'static str),
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Ident(s) => s.clone(),
            Tok::Lit(v) => v.to_string(),
            Tok::Op(o) => o.to_string(),
        }
    }
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ConditionError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '\'' || c == '"' {
            let quote = c;
            i += 1;
            let mut s = String::new();
            while i < chars.len() && chars[i] != quote {
                s.push(chars[i]);
                i += 1;
            }
            if i == chars.len() {
                return Err(ConditionError { offset: start, message: "text is not closed with a quote".into() });
            }
            i += 1;
            out.push((start, Tok::Lit(Value::String(s))));
            continue;
        }
        if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let value = if let Ok(n) = text.parse::<i64>() {
                Value::from(n)
            } else {
                match text.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                    Some(n) => Value::Number(n),
                    None => {
                        return Err(ConditionError { offset: start, message: format!("`{text}` is not a number") });
                    }
                }
            };
            out.push((start, Tok::Lit(value)));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let tok = match word.as_str() {
                "true" => Tok::Lit(Value::Bool(true)),
                "false" => Tok::Lit(Value::Bool(false)),
                "null" => Tok::Lit(Value::Null),
                "and" => Tok::Op("&&"),
                "or" => Tok::Op("||"),
                "not" => Tok::Op("!"),
                "in" => Tok::Op("in"),
                _ => Tok::Ident(word),
            };
            out.push((start, tok));
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let op = match two.as_str() {
            "==" => Some("=="),
            "!=" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            "&&" => Some("&&"),
            "||" => Some("||"),
            _ => None,
        };
        if let Some(op) = op {
            out.push((start, Tok::Op(op)));
            i += 2;
            continue;
        }
        let op = match c {
            '<' => "<",
            '>' => ">",
            '!' => "!",
            '(' => "(",
            ')' => ")",
            '[' => "[",
            ']' => "]",
            ',' => ",",
            '=' => {
                return Err(ConditionError { offset: start, message: "use `==` to compare".into() });
            }
            _ => {
                return Err(ConditionError { offset: start, message: format!("unexpected character `{c}`") });
            }
        };
        out.push((start, Tok::Op(op)));
        i += 1;
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Tok)>,
    at: usize,
    depth: usize,
}

/// How deeply `(` and `!` may nest in a condition.
pub const MAX_DEPTH: usize = 32;

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.at).map(|(_, t)| t)
    }
    fn offset(&self) -> usize {
        self.tokens.get(self.at).map_or_else(|| self.tokens.last().map_or(0, |(o, _)| *o + 1), |(o, _)| *o)
    }
    fn eat(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.at += 1;
            true
        } else {
            false
        }
    }
    fn err<T>(&self, message: impl Into<String>) -> Result<T, ConditionError> {
        Err(ConditionError { offset: self.offset(), message: message.into() })
    }
    fn or(&mut self) -> Result<Condition, ConditionError> {
        let mut args = vec![self.and()?];
        while self.eat("||") {
            args.push(self.and()?);
        }
        Ok(if args.len() == 1 { args.remove(0) } else { Condition::Or { args } })
    }
    fn and(&mut self) -> Result<Condition, ConditionError> {
        let mut args = vec![self.not()?];
        while self.eat("&&") {
            args.push(self.not()?);
        }
        Ok(if args.len() == 1 { args.remove(0) } else { Condition::And { args } })
    }
    /// Goes one level deeper (`(` or `!`), refusing past [`MAX_DEPTH`]: a
    /// condition is read by recursion, which must not run out of stack.
    fn deeper(&mut self) -> Result<(), ConditionError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { self.err(format!("the condition is nested too deeply (at most {MAX_DEPTH} levels of `(` and `!`)")) } else { Ok(()) }
    }
    fn not(&mut self) -> Result<Condition, ConditionError> {
        if self.eat("!") {
            self.deeper()?;
            let arg = self.not()?;
            self.depth -= 1;
            return Ok(Condition::Not { arg: Box::new(arg) });
        }
        self.comparison()
    }
    fn literal(&mut self) -> Result<Value, ConditionError> {
        match self.peek().cloned() {
            Some(Tok::Lit(v)) => {
                self.at += 1;
                Ok(v)
            }
            Some(Tok::Ident(name)) => self.err(format!("expected a value after the comparison, found the name `{name}`; put text in quotes: '{name}'")),
            _ => self.err("expected a value (text in quotes, a number, true, false or null)"),
        }
    }
    fn comparison(&mut self) -> Result<Condition, ConditionError> {
        if self.eat("(") {
            self.deeper()?;
            let inner = self.or()?;
            if !self.eat(")") {
                return self.err("expected `)`");
            }
            self.depth -= 1;
            return Ok(inner);
        }
        let field = match self.peek().cloned() {
            Some(Tok::Ident(name)) => {
                self.at += 1;
                name
            }
            Some(Tok::Lit(_)) => {
                return self.err("a condition starts with a field name, e.g. `priority == 'urgent'`");
            }
            _ => return self.err("expected a field name"),
        };
        if self.eat("in") {
            if !self.eat("[") {
                return self.err("expected `[` after `in`");
            }
            let mut values = Vec::new();
            if !self.eat("]") {
                loop {
                    values.push(self.literal()?);
                    if self.eat("]") {
                        break;
                    }
                    if !self.eat(",") {
                        return self.err("expected `,` or `]`");
                    }
                }
            }
            return Ok(Condition::In { field, values });
        }
        let cmp = match self.peek() {
            Some(Tok::Op("==")) => Cmp::Eq,
            Some(Tok::Op("!=")) => Cmp::Ne,
            Some(Tok::Op("<")) => Cmp::Lt,
            Some(Tok::Op("<=")) => Cmp::Le,
            Some(Tok::Op(">")) => Cmp::Gt,
            Some(Tok::Op(">=")) => Cmp::Ge,
            _ => return Ok(Condition::Truthy { field }),
        };
        self.at += 1;
        let value = self.literal()?;
        Ok(Condition::Compare { field, cmp, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Regression: the parser recursed without a limit, so a condition of a
    /// hundred thousand `(` overflowed the stack.
    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let deep = format!("{}a == 1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert!(Condition::parse(&deep).unwrap_err().message.contains("nested too deeply"));
        let nots = format!("{}a", "!".repeat(100_000));
        assert!(Condition::parse(&nots).is_err());
        let fine = format!("{}a == 1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(Condition::parse(&fine).is_ok());
    }

    fn check(src: &str, data: Value, expected: bool) {
        let c = Condition::parse(src).unwrap_or_else(|e| panic!("{src}: {e:?}"));
        assert_eq!(c.eval(&data), expected, "{src} on {data}");
    }

    #[test]
    fn evaluates() {
        check("priority == 'urgent'", json!({"priority": "urgent"}), true);
        check("priority == 'urgent'", json!({}), false);
        check("priority != \"urgent\"", json!({"priority": "low"}), true);
        check("floor >= 10 && building == 'lab'", json!({"floor": 12, "building": "lab"}), true);
        check("floor > 10 or not resolved", json!({"floor": 3, "resolved": false}), true);
        check("category in ['hvac', 'elevator']", json!({"category": "elevator"}), true);
        check("tags == 'a'", json!({"tags": ["b", "a"]}), true);
        check("!(a || b)", json!({"a": false, "b": 0}), true);
        check("photos", json!({"photos": []}), false);
    }

    #[test]
    fn reports_errors_with_offsets() {
        let e = Condition::parse("priority = 'urgent'").unwrap_err();
        assert_eq!(e.offset, 9);
        let e = Condition::parse("priority == urgent").unwrap_err();
        assert!(e.message.contains("quotes"), "{}", e.message);
        assert!(Condition::parse("a == 'x").is_err());
        assert!(Condition::parse("(a").is_err());
        assert!(Condition::parse("a b").is_err());
    }

    #[test]
    fn lists_fields() {
        let c = Condition::parse("a == 1 && (b || !c) && d in [1]").unwrap();
        assert_eq!(c.fields(), vec!["a", "b", "c", "d"]);
    }
}
