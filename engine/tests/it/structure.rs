//! The engine's modules point one way: no module reaches, through `crate::` paths in its
//! non-test code, a module that reaches back to it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The library's files (not the binary's `cli` and `main`) as (top-level module, non-test code
/// without comments).
fn library_code() -> Vec<(String, String)> {
    let src = super::support::manifest_dir().join("src");
    let mut files = Vec::new();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str();
        let module = Path::new(first)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .to_string();
        // The binary's own files are not part of the library.
        if module == "cli" || module == "main" || module == "lib" {
            continue;
        }
        files.push((module, code_of(&file)));
    }
    files
}

/// The library's top-level modules and, for each, the top-level modules its code names.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in library_code() {
        let uses = graph.entry(module.clone()).or_default();
        for named in paths_after(&code, "crate::") {
            let named = match named.as_str() {
                "Error" | "Result" => "error".to_string(),
                _ => named,
            };
            if named != module {
                uses.insert(named);
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|named| modules.contains(named));
    }
    graph
}

/// A source file's code without its unit tests (they sit at the end of a file and may use
/// anything) and without comment lines.
fn code_of(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    text.split("#[cfg(test)]")
        .next()
        .unwrap()
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The first segment of every path under `root` (`crate::`, `nudge_connectors::`), braces
/// included (`crate::{a, b::c}` names a and b).
fn paths_after(code: &str, root: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(root) {
        rest = &rest[at + root.len()..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = inner
                .char_indices()
                .find(|(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(inner.len(), |(i, _)| i);
            let mut depth = 0;
            let mut item = String::new();
            for c in inner[..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        names.push(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            names.push(first_segment(rest));
        }
    }
    names.retain(|name| !name.is_empty());
    names
}

fn first_segment(path: &str) -> String {
    path.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// A cycle through `start`, if there is one.
fn cycle_from(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((module, path)) = stack.pop() {
        for next in graph.get(&module).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_string());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

#[test]
fn no_module_of_the_engine_reaches_back_to_itself() {
    let graph = module_graph();
    assert!(
        !graph["store"].contains("config"),
        "the store takes plain values (StoreOptions), not the whole Config"
    );
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|module| cycle_from(&graph, module))
        .map(|cycle| cycle.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn each_stage_names_only_the_stages_before_it_and_the_shared_modules() {
    let graph = module_graph();
    // Quiet hours (`quiet`) and the hash (`mix`) are shared: dispatch does not reach into the
    // windows' code for them, and planning does not reach into dispatch for the configuration's
    // names and bounds (`config`).
    for (stage, later_or_aside) in [("dispatch", "windows"), ("campaign", "dispatch")] {
        assert!(
            !graph[stage].contains(later_or_aside),
            "`{stage}` names `{later_or_aside}`: {:?}",
            graph[stage]
        );
    }
}

#[test]
fn polars_stays_inside_the_modules_architecture_lists() {
    // ARCHITECTURE.md, "polars stays inside": the event files' readers and writers, the scans
    // that read them (windows, facts, stats, exports, a user's page) and the error conversion.
    const ALLOWED: [&str; 10] = [
        "store/segments.rs",
        "store/lookup.rs",
        "store/export.rs",
        "ingest/parquet.rs",
        "synth/write.rs",
        "windows/",
        "features.rs",
        "stats.rs",
        "users.rs",
        "error.rs",
    ];
    let src = super::support::manifest_dir().join("src");
    let outside: Vec<String> = rust_files(&src)
        .into_iter()
        .filter_map(|file| {
            let relative = file
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let names_polars = code_of(&file)
                .lines()
                .any(|line| line.contains("polars::") || line.contains("polars_arrow::"));
            (names_polars && !ALLOWED.iter().any(|allowed| relative.starts_with(allowed)))
                .then_some(relative)
        })
        .collect();
    assert!(
        outside.is_empty(),
        "polars named outside its modules: {outside:?}"
    );
}

#[test]
fn the_import_reader_sees_braced_and_nested_paths() {
    let code = "use crate::{store::{Store, segments}, event};\nlet x = crate::time::DAY_MS;";
    assert_eq!(paths_after(code, "crate::"), ["store", "event", "time"]);
    let graph = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(
        cycle_from(&graph, "a"),
        Some(vec!["a".to_string(), "b".to_string(), "a".to_string()])
    );
}

// See: #21. A new channel is a new folder under `connectors/` and nothing else: the engine's
// library (planner, store, dispatcher) knows connectors through the crate's traits and config
// types only, never a channel's own module. The CLI may name them (the mock, template sync).
#[test]
fn the_engine_knows_no_channel_by_name() {
    let channels = ["wechat", "webhook", "file"];
    let mut named = Vec::new();
    for (module, code) in library_code() {
        for path in paths_after(&code, "nudge_connectors::") {
            if channels.contains(&path.as_str()) {
                named.push(format!("{module} names nudge_connectors::{path}"));
            }
        }
    }
    assert!(named.is_empty(), "{}", named.join("\n"));
    let code = "use nudge_connectors::{Checks, wechat::keywords};";
    assert_eq!(
        paths_after(code, "nudge_connectors::"),
        ["Checks", "wechat"]
    );
}

#[test]
fn in_the_connectors_a_channel_is_named_only_by_its_own_files_and_the_list_of_channels() {
    // `channel.rs` and `config.rs` list the channels; `lib.rs` declares their modules; a file
    // connector checks what WeChat would (it stands in for it in dry runs).
    let listing = ["channel.rs", "config.rs", "lib.rs"];
    let src = super::support::manifest_dir().join("../connectors/src");
    let mut named = Vec::new();
    for file in rust_files(&src) {
        let relative = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .to_string();
        if listing.contains(&relative.as_str()) {
            continue;
        }
        let code = code_of(&file);
        for channel in ["wechat", "webhook", "file"] {
            let own =
                relative.starts_with(&format!("{channel}/")) || relative == format!("{channel}.rs");
            let allowed = relative == "file.rs" && channel == "wechat";
            if !own && !allowed && paths_after(&code, "crate::").contains(&channel.to_string()) {
                named.push(format!("{relative} names crate::{channel}"));
            }
        }
    }
    assert!(named.is_empty(), "{}", named.join("\n"));
}

/// Each package of a `cargo tree` as `name version features`, features sorted.
fn package_features(args: &[&str]) -> BTreeSet<String> {
    let workspace = super::support::manifest_dir().join("..");
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(&workspace)
        .args(["tree", "--offline", "--prefix", "none", "-f", "{p} {f}"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| !line.trim().is_empty())
        // "name vX.Y.Z (path)? features": drop the path and the "(*)" of repeats.
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let features = words
                .iter()
                .skip(2)
                .filter(|word| !word.starts_with('(') && !word.ends_with(')'))
                .copied()
                .collect::<Vec<_>>()
                .join(",");
            let mut features: Vec<&str> = features.split(',').filter(|f| !f.is_empty()).collect();
            features.sort_unstable();
            format!("{} {} {}", words[0], words[1], features.join(","))
        })
        .collect()
}

// See: #36 (6). `cargo run -- quickstart` builds the binary without dev-dependencies and
// `cargo test --workspace` with them; Cargo builds a crate once per feature set, so a crate the
// binary uses (polars and what it is built from) with other features in the tests' build is
// built twice, and a newcomer waits for polars twice. The pins in the workspace Cargo.toml keep
// the two sets equal.
#[test]
fn the_binary_and_the_tests_build_polars_with_the_same_features() {
    let binary = package_features(&["-p", "nudge-engine", "-e", "no-dev"]);
    let tests = package_features(&["--workspace"]);
    let differ: Vec<&String> = binary.difference(&tests).collect();
    assert!(
        differ.is_empty(),
        "built with other features by `cargo test --workspace` than by `cargo run`: {differ:#?}\n\
         pin the tests' features in the workspace Cargo.toml's feature pins"
    );
}

/// The store's files (not `states.rs`, which names the states) as (path under `store/`,
/// non-test code without comments).
fn store_code() -> Vec<(String, String)> {
    let store = super::support::manifest_dir().join("src/store");
    rust_files(&store)
        .into_iter()
        .map(|file| {
            let relative = file
                .strip_prefix(&store)
                .unwrap()
                .to_string_lossy()
                .to_string();
            (relative, code_of(&file))
        })
        .filter(|(relative, _)| relative != "states.rs")
        .collect()
}

/// What `find` finds in each of the store's files, each named by its file.
fn in_store_code(find: fn(&str) -> Vec<String>) -> Vec<String> {
    store_code()
        .into_iter()
        .flat_map(|(file, code)| {
            find(&code)
                .into_iter()
                .map(move |found| format!("store/{file}: {found}"))
        })
        .collect()
}

/// The quoted state names (`'sent'`) in `code`, for every send and run state.
fn state_literals(code: &str) -> Vec<String> {
    use nudge_engine::store::{RunState, SendState};
    let names = SendState::ALL
        .iter()
        .map(|state| state.as_str())
        .chain(RunState::ALL.iter().map(|state| state.as_str()));
    names
        .map(|name| format!("'{name}'"))
        .filter(|quoted| code.contains(quoted.as_str()))
        .collect()
}

/// The reads of a row's column by position (`row.get(3)`, `row.try_get::<i64, _>(0)`, a
/// fetched row's `.await?.get(0)`) in `code`.
fn positional_reads(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in code.match_indices("get") {
        let before = code[..at].strip_suffix("try_").unwrap_or(&code[..at]);
        let Some(receiver) = before.strip_suffix('.') else {
            continue;
        };
        let receiver = receiver.trim_end();
        if !receiver.ends_with("row") && !receiver.ends_with(".await?") {
            continue;
        }
        let rest = &code[at + 3..];
        // `get(` or a turbofish `get::<...>(`, then digits and `)`.
        let args = if let Some(rest) = rest.strip_prefix('(') {
            rest
        } else if rest.starts_with("::<") {
            match rest.find(">(") {
                Some(end) if !rest[..end].contains(['\n', ';']) => &rest[end + 2..],
                _ => continue,
            }
        } else {
            continue;
        };
        let digits = args.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 && args[digits..].starts_with(')') {
            let start = code[..at].rfind(['\n', ';']).map_or(0, |i| i + 1);
            found.push(code[start..at + 3].trim().to_string() + &rest[..rest.len().min(24)]);
        }
    }
    found
}

// See: #40. A state is bound as a value and read into the enum: the store's SQL never spells
// one (where a planner must see it, `with_states` writes it from the enum, as `{planned}`).
#[test]
fn the_store_spells_no_state_in_its_sql() {
    let spelled = in_store_code(state_literals);
    assert!(spelled.is_empty(), "{}", spelled.join("\n"));
    assert_eq!(
        state_literals("WHERE state = 'sending' AND failure = 'forgotten'"),
        ["'sending'"]
    );
}

// See: #40. Rows are read by column name, so a column added or moved in a SELECT cannot shift
// what a field reads.
#[test]
fn the_store_reads_columns_by_name() {
    let positional = in_store_code(positional_reads);
    assert!(positional.is_empty(), "{}", positional.join("\n"));
    let sample = "let a = row.get(0);\nlet b: i64 = row.try_get::<Option<i64>, _>(12)?;\n\
                  let c = q.fetch_one(pool).await?\n    .get(1); let d = row.try_get(\"name\")?;\n\
                  let e = column.i64()?.get(0); map.get(&key);";
    assert_eq!(
        positional_reads(sample).len(),
        3,
        "{:?}",
        positional_reads(sample)
    );
}

// See: #40. The store dates what it writes by its clock (`Store::with_clock`), so a test or a
// run `--now` sees its own time in the rows; the wall clock only seeds names that must be unique.
#[test]
fn the_store_reads_the_time_through_its_clock() {
    let read = in_store_code(wall_clock_reads);
    let seeds = [
        "store/mod.rs: fn store_id",
        "store/segments.rs: fn new_batch_name",
        "store/segments.rs: fn sweep",
    ];
    let unexpected: Vec<&String> = read
        .iter()
        .filter(|found| !seeds.iter().any(|seed| found.starts_with(seed)))
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:#?}");
    let sample = "fn a() {\n    let now = chrono::Utc::now().timestamp_millis();\n}\n\
                  fn b() { self.now_ms() }\nfn c() { SystemTime::now() }";
    assert_eq!(wall_clock_reads(sample), ["fn a", "fn c"]);
}

/// The functions of `code` that read the wall clock (`Utc::now()`, `SystemTime::now()`), each
/// as `fn NAME` (the nearest function opened above the read).
fn wall_clock_reads(code: &str) -> Vec<String> {
    let mut function = String::from("(outside a function)");
    let mut found = Vec::new();
    for line in code.lines() {
        if let Some(at) = line.find("fn ") {
            let name: String = line[at + 3..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                function = format!("fn {name}");
            }
        }
        if line.contains("Utc::now()") || line.contains("SystemTime::now()") {
            found.push(function.clone());
        }
    }
    found.dedup();
    found
}

/// Every whole path under `root` (`crate::`, `super::`) in `code`, as its segments, braces
/// expanded (`crate::a::{b, c::d}` is `a::b` and `a::c::d`).
fn whole_paths(code: &str, root: &str) -> Vec<Vec<String>> {
    fn expand(text: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut segments = prefix.to_vec();
        let mut rest = text.trim_start();
        loop {
            if let Some(inner) = rest.strip_prefix('{') {
                let mut depth = 0;
                let mut item = String::new();
                for c in inner.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            expand(&item, &segments, out);
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
                expand(&item, &segments, out);
                return;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != "self" {
                segments.push(name.clone());
            }
            rest = rest[name.len()..].trim_start();
            match rest.strip_prefix("::") {
                Some(after) => rest = after.trim_start(),
                None => break,
            }
        }
        if segments.len() > prefix.len() {
            out.push(segments);
        }
    }
    let mut paths = Vec::new();
    for (at, _) in code.match_indices(root) {
        let before = code[..at].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        expand(&code[at + root.len()..], &[], &mut paths);
    }
    paths
}

/// A crate's files as modules (`store::outbox::lease`) and, for each, the modules of the crate
/// its code names (`crate::` and `super::` paths, each resolved to the deepest module it goes
/// through), leaving out its own ancestors: a child naming its parent's shared types is not a
/// loop, two files naming each other are.
fn file_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = BTreeMap::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap().with_extension("");
        let mut module: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        if matches!(
            module.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            module.pop();
        }
        files.insert(module, code_of(&file));
    }
    let mut graph = BTreeMap::new();
    for (module, code) in &files {
        let mut named = BTreeSet::new();
        let parent = &module[..module.len().saturating_sub(1)];
        let paths = whole_paths(code, "crate::").into_iter().chain(
            whole_paths(code, "super::")
                .into_iter()
                .map(|path| [parent, &path[..]].concat()),
        );
        for path in paths {
            let Some(target) = (1..=path.len())
                .rev()
                .map(|len| &path[..len])
                .find(|prefix| files.contains_key(*prefix))
            else {
                continue;
            };
            if !module.starts_with(target) {
                named.insert(target.join("::"));
            }
        }
        graph.insert(module.join("::"), named);
    }
    graph
}

// See: #40. Two files that name each other cannot be read, changed or tested one without the
// other: in the engine, the rules and the connectors, no file reaches, through the modules it
// names, back to itself (a child may name its parent: that is where shared types live).
#[test]
fn no_file_of_a_crate_reaches_back_to_itself() {
    let root = super::support::manifest_dir();
    let mut loops = Vec::new();
    for crate_src in ["src", "../rules/src", "../connectors/src"] {
        let graph = file_graph(&root.join(crate_src));
        for module in graph.keys() {
            if let Some(cycle) = cycle_from(&graph, module) {
                loops.push(format!("{crate_src}: {}", cycle.join(" -> ")));
            }
        }
    }
    assert!(loops.is_empty(), "{}", loops.join("\n"));
    assert_eq!(
        whole_paths(
            "use crate::{a::{b, c::D}, e}; super::f::g(); my_crate::x; use super::*;",
            "crate::"
        ),
        [vec!["a", "b"], vec!["a", "c", "D"], vec!["e"]]
    );
    // The two files the sandbox and the API of the rules were (a loop until #40).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.rs"), "mod api; mod sandbox;").unwrap();
    std::fs::write(dir.path().join("api.rs"), "use crate::sandbox::now_ms;").unwrap();
    std::fs::write(
        dir.path().join("sandbox.rs"),
        "fn engine() { crate::api::register(); }",
    )
    .unwrap();
    let graph = file_graph(dir.path());
    assert_eq!(
        cycle_from(&graph, "api"),
        Some(vec!["api".into(), "sandbox".into(), "api".into()])
    );
}
