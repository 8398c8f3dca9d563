//! Tracing `target` for one user: the value of each top-level statement of the function, for
//! `nudge rules explain`.
//!
//! Works line by line on the function's top level: `let name = expr;` lines are evaluated and
//! bound (so later lines can use them), `if cond {` lines show the condition and each of its
//! top-level `&&` / `||` parts, `return expr;` and the final expression show their value. A
//! condition that holds over a block that returns or skips ends the trace, as it ends the
//! function. Statements spread over several lines are not traced.

use std::sync::Arc;

use rhai::{Dynamic, Scope};

use crate::api::User;
use crate::facts::UserFacts;
use crate::rule::Rule;
use crate::sandbox;

/// One traced expression.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Step {
    /// 1-based line in the rule file.
    pub line: usize,
    /// The expression as written (for `let`, `name = expr`).
    pub text: String,
    /// Its value, or the error evaluating it.
    pub value: String,
    /// Nesting: 0 for a statement, 1 for a part of an `&&` / `||` condition.
    pub depth: usize,
    /// The function returns (or skips) right after this step.
    pub ends: bool,
}

impl Rule {
    /// The value of each top-level statement of `target` for `facts` at `now_ms`.
    pub fn trace(&self, facts: Arc<UserFacts>, now_ms: i64) -> Vec<Step> {
        let lines: Vec<&str> = self.source().lines().collect();
        let Some(start) = lines
            .iter()
            .position(|l| l.trim_start().starts_with("fn target("))
        else {
            return Vec::new();
        };
        let mut scope = self.constants().clone();
        scope.push("user", User(facts));
        let functions = self.ast().clone_functions_only();
        let eval = |scope: &mut Scope, text: &str| -> Result<Dynamic, String> {
            let mut ast = self
                .engine()
                .compile_expression_with_scope(scope, text)
                .map_err(|e| e.to_string())?;
            ast += functions.clone();
            self.engine()
                .eval_ast_with_scope::<Dynamic>(scope, &ast)
                .map_err(|e| e.to_string())
        };
        let show = |result: &Result<Dynamic, String>| match result {
            Ok(value) if value.is_string() => format!("{value:?}"),
            Ok(value) if value.is_unit() => "()".to_string(),
            Ok(value) => value.to_string(),
            Err(error) => format!("error: {error}"),
        };
        // A condition's `&&` / `||` operands, each with its value, one level in.
        let parts = |scope: &mut Scope, expr: &str, line: usize| -> Vec<Step> {
            let operands = top_level_parts(expr);
            if operands.len() < 2 {
                return Vec::new();
            }
            operands
                .into_iter()
                .map(|part| Step {
                    line,
                    text: part.to_string(),
                    value: show(&eval(scope, part)),
                    depth: 1,
                    ends: false,
                })
                .collect()
        };
        let mut steps = Vec::new();
        sandbox::with_evaluation(now_ms, self.limits(), || {
            let mut depth = brace_balance(lines[start]);
            let mut index = start + 1;
            while index < lines.len() && depth > 0 {
                let line = lines[index].trim();
                let number = index + 1;
                let at_top = depth == 1;
                depth += brace_balance(line);
                index += 1;
                if !at_top || line.is_empty() || line.starts_with("//") || line == "}" {
                    continue;
                }
                if let Some(rest) = line.strip_prefix("let ")
                    && let Some((name, expr)) =
                        rest.strip_suffix(';').and_then(|r| r.split_once('='))
                {
                    let (name, expr) = (name.trim(), expr.trim());
                    let result = eval(&mut scope, expr);
                    steps.push(Step {
                        line: number,
                        text: format!("{name} = {expr}"),
                        value: show(&result),
                        depth: 0,
                        ends: false,
                    });
                    scope.push_dynamic(name.to_string(), result.unwrap_or(Dynamic::UNIT));
                } else if let Some(cond) =
                    line.strip_prefix("if ").and_then(|r| r.strip_suffix('{'))
                {
                    let cond = cond.trim();
                    let result = eval(&mut scope, cond);
                    // Does the block return or skip? Look at its lines.
                    let block_ends = block_returns(&lines[index..]);
                    let holds = matches!(&result, Ok(v) if v.as_bool() == Ok(true));
                    steps.push(Step {
                        line: number,
                        text: cond.to_string(),
                        value: show(&result),
                        depth: 0,
                        ends: holds && block_ends,
                    });
                    steps.extend(parts(&mut scope, cond, number));
                    if holds && block_ends {
                        break;
                    }
                } else if let Some(expr) = line
                    .strip_prefix("return ")
                    .and_then(|r| r.strip_suffix(';'))
                {
                    let result = eval(&mut scope, expr.trim());
                    steps.push(Step {
                        line: number,
                        text: format!("return {}", expr.trim()),
                        value: show(&result),
                        depth: 0,
                        ends: true,
                    });
                    break;
                } else if !line.ends_with(';') && !line.ends_with('{') && depth == 1 {
                    // The function's final expression.
                    let result = eval(&mut scope, line);
                    steps.push(Step {
                        line: number,
                        text: line.to_string(),
                        value: show(&result),
                        depth: 0,
                        ends: true,
                    });
                    steps.extend(parts(&mut scope, line, number));
                }
            }
        });
        steps
    }
}

/// Opening minus closing braces outside strings and comments.
fn brace_balance(line: &str) -> i64 {
    let mut balance = 0;
    let mut quote: Option<char> = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(_), _) => {}
            (None, '"' | '`' | '\'') => quote = Some(c),
            (None, '/') if chars.peek() == Some(&'/') => break,
            (None, '{') => balance += 1,
            (None, '}') => balance -= 1,
            _ => {}
        }
    }
    balance
}

/// Whether the block starting at `lines[0]` (just inside its `{`) returns or skips at its top.
fn block_returns(lines: &[&str]) -> bool {
    let mut depth = 1;
    for line in lines {
        let line = line.trim();
        if depth == 1 && (line.starts_with("return") || line.starts_with("skip(")) {
            return true;
        }
        depth += brace_balance(line);
        if depth <= 0 {
            break;
        }
    }
    false
}

/// The operands of the top-level `&&` / `||` of an expression (one part when there is none).
fn top_level_parts(expr: &str) -> Vec<&str> {
    let bytes = expr.as_bytes();
    let mut parts = Vec::new();
    let (mut depth, mut from, mut quote) = (0i32, 0, None::<u8>);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'"' | b'`' | b'\'' => quote = Some(b),
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth -= 1,
                b'&' | b'|' if depth == 0 && bytes.get(i + 1) == Some(&b) => {
                    parts.push(expr[from..i].trim());
                    from = i + 2;
                    i += 1;
                }
                _ => {}
            },
        }
        i += 1;
    }
    parts.push(expr[from..].trim());
    parts
}
