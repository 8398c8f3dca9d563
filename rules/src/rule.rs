//! A compiled rule and what it decides for one user.

use std::collections::BTreeMap;
use std::sync::Arc;

use rhai::{AST, CallFnOptions, Dynamic, Engine, EvalAltResult, Position, Scope};

use crate::analysis::{self, FactNeeds};
use crate::api::{SkipSignal, User};
use crate::error::CompileError;
use crate::facts::UserFacts;
use crate::sandbox::{self, DEADLINE_TOKEN, Limits};

/// A rule compiled once and shared by every thread that evaluates it.
pub struct Rule {
    name: String,
    source: String,
    engine: Engine,
    ast: AST,
    constants: Scope<'static>,
    needs: FactNeeds,
    has_message: bool,
    limits: Limits,
}

/// The rendered content of a targeted user's notification.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Message {
    /// Template keyword values (`thing1`, `time2`, ...), as text.
    pub fields: BTreeMap<String, String>,
    pub page: Option<String>,
    pub priority: Option<i64>,
}

/// The outcome of a rule for one user.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// `target` returned true; the message is empty when the rule has no `message`.
    Target(Message),
    /// `target` returned false.
    NotTargeted,
    /// The script called `skip(reason)`.
    Skip(String),
    /// The script failed for this user: the reason, with the line.
    Error(String),
}

impl Rule {
    /// Compiles `source`; `name` (usually the file path) is used in errors.
    pub fn compile(name: &str, source: &str, limits: Limits) -> Result<Rule, CompileError> {
        let compile_error = |message: String, position: Position| {
            let line = position.line().unwrap_or(0);
            CompileError {
                file: name.to_string(),
                line,
                column: position.position().unwrap_or(0),
                message,
                source_line: source
                    .lines()
                    .nth(line.saturating_sub(1))
                    .unwrap_or_default()
                    .to_string(),
            }
        };
        // Constants at the top are evaluated once, then seen by functions as definitions.
        let mut loose = sandbox::engine(&limits);
        loose.set_strict_variables(false);
        let first = loose
            .compile(source)
            .map_err(|error| compile_error(error.err_type().to_string(), error.position()))?;
        let mut constants = Scope::new();
        let globals = first.clone_statements_only();
        sandbox::with_evaluation(0, &limits, || {
            loose.run_ast_with_scope(&mut constants, &globals)
        })
        .map_err(|error| {
            compile_error(format!("top-level code failed: {error}"), error.position())
        })?;
        let engine = sandbox::engine(&limits);
        let ast = engine
            .compile_with_scope(&constants, source)
            .map_err(|error| compile_error(error.err_type().to_string(), error.position()))?;
        let has_fn = |wanted: &str| {
            ast.iter_functions()
                .any(|f| f.name == wanted && f.params.len() == 1)
        };
        if !has_fn("target") {
            return Err(compile_error(
                "the rule must define `fn target(user)` returning true or false".to_string(),
                Position::new(1, 1),
            ));
        }
        let has_message = has_fn("message");
        Ok(Rule {
            name: name.to_string(),
            source: source.to_string(),
            engine,
            ast,
            constants,
            needs: analysis::analyse(source),
            has_message,
            limits,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The same rule with an engine, AST and constants of its own, compiled again from the
    /// source. Threads that share a rule share its AST's string literals, constants and
    /// function library, whose reference counts every evaluation moves: on two cores the shared
    /// counters' cache line went back and forth so much that two threads evaluated no faster
    /// than one (`nudge-benches rules`: 1.3M users/s shared, 2.6M users/s with a copy each).
    /// [`crate::evaluate_all`] gives each chunk of users its own copy.
    pub fn with_own_engine(&self) -> Rule {
        // The source compiled before; should its top-level code fail this time (its deadline on
        // a loaded machine), a copy that shares the AST is slower but evaluates the same.
        Rule::compile(&self.name, &self.source, self.limits).unwrap_or_else(|_| Rule {
            name: self.name.clone(),
            source: self.source.clone(),
            engine: sandbox::engine(&self.limits),
            ast: self.ast.clone(),
            constants: self.constants.clone(),
            needs: self.needs.clone(),
            has_message: self.has_message,
            limits: self.limits,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The facts this rule reads.
    pub fn needs(&self) -> &FactNeeds {
        &self.needs
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn ast(&self) -> &AST {
        &self.ast
    }

    pub(crate) fn constants(&self) -> &Scope<'static> {
        &self.constants
    }

    /// Decides for one user at `now_ms`. Never panics on script errors: they become
    /// [`Decision::Error`] with the line.
    pub fn evaluate(&self, facts: Arc<UserFacts>, now_ms: i64) -> Decision {
        sandbox::with_evaluation(now_ms, &self.limits, || {
            let user = User(facts);
            let targeted = match self.call("target", &user) {
                Ok(value) => value,
                Err(decision) => return decision,
            };
            match targeted.as_bool() {
                Ok(false) => Decision::NotTargeted,
                Ok(true) if !self.has_message => Decision::Target(Message::default()),
                Ok(true) => match self.call("message", &user) {
                    Ok(value) => message_of(value).map_or_else(Decision::Error, Decision::Target),
                    Err(decision) => decision,
                },
                Err(kind) => {
                    Decision::Error(format!("target must return true or false, got {kind}"))
                }
            }
        })
    }

    /// The message `message(user)` builds for one user whether or not `target` picks them
    /// (a test send to a team member's own account); an error names its line.
    pub fn render_message(&self, facts: Arc<UserFacts>, now_ms: i64) -> Result<Message, String> {
        if !self.has_message {
            return Ok(Message::default());
        }
        sandbox::with_evaluation(now_ms, &self.limits, || {
            match self.call("message", &User(facts)) {
                Ok(value) => message_of(value),
                Err(Decision::Error(error)) => Err(error),
                Err(Decision::Skip(reason)) => Err(format!("message skipped: {reason}")),
                Err(other) => Err(format!("message failed: {other:?}")),
            }
        })
    }

    fn call(&self, function: &str, user: &User) -> Result<Dynamic, Decision> {
        let mut scope = self.constants.clone();
        let options = CallFnOptions::new().eval_ast(false).rewind_scope(true);
        self.engine
            .call_fn_with_options::<Dynamic>(
                options,
                &mut scope,
                &self.ast,
                function,
                (user.clone(),),
            )
            .map_err(|error| self.classify(*error))
    }

    fn classify(&self, error: EvalAltResult) -> Decision {
        let (root, line) = root_cause(error);
        let at = line
            .map(|line| format!(" (line {line})"))
            .unwrap_or_default();
        match root {
            EvalAltResult::ErrorRuntime(value, _) if value.is::<SkipSignal>() => {
                Decision::Skip(value.cast::<SkipSignal>().0)
            }
            EvalAltResult::ErrorTerminated(token, _) if token.to_string() == DEADLINE_TOKEN => {
                Decision::Error(format!(
                    "took longer than {} ms{at}",
                    self.limits.deadline_ms
                ))
            }
            EvalAltResult::ErrorTooManyOperations(_) => Decision::Error(format!(
                "exceeded {} operations (an endless loop?){at}",
                self.limits.max_operations
            )),
            EvalAltResult::ErrorStackOverflow(_) => Decision::Error(format!(
                "calls nested deeper than {} (endless recursion?){at}",
                self.limits.max_call_depth
            )),
            EvalAltResult::ErrorDataTooLarge(what, _) => Decision::Error(format!(
                "{what} over the limit (strings {} bytes, arrays {} items, maps {} entries){at}",
                self.limits.max_string_size, self.limits.max_array_size, self.limits.max_map_size
            )),
            other => Decision::Error(format!(
                "{}{at}",
                other.to_string().split(" (line").next().unwrap_or_default()
            )),
        }
    }
}

/// Unwraps errors raised inside function calls to the one that started it, with its line.
fn root_cause(error: EvalAltResult) -> (EvalAltResult, Option<usize>) {
    let mut current = error;
    loop {
        match current {
            EvalAltResult::ErrorInFunctionCall(_, _, inner, _) => current = *inner,
            other => {
                let line = other.position().line();
                return (other, line);
            }
        }
    }
}

fn message_of(value: Dynamic) -> Result<Message, String> {
    let kind = value.type_name();
    let map = value.try_cast::<rhai::Map>().ok_or_else(|| {
        format!("message must return a map like #{{ thing1: \"...\" }}, got {kind}")
    })?;
    let mut message = Message::default();
    for (key, value) in map {
        match key.as_str() {
            "page" => message.page = Some(value.to_string()),
            "priority" => {
                message.priority =
                    Some(value.as_int().map_err(|kind| {
                        format!("message priority must be an integer, got {kind}")
                    })?)
            }
            keyword => {
                if value.is_unit() {
                    return Err(format!(
                        "message keyword {keyword} is empty (a fact was missing?)"
                    ));
                }
                message
                    .fields
                    .insert(keyword.to_string(), value.to_string());
            }
        }
    }
    Ok(message)
}
