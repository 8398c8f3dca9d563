//! Every example rule compiles and its cases file passes: the examples are the documentation.

use nudge_rules::{Limits, Rule, cases};

#[test]
fn every_example_rule_passes_its_cases() {
    // At run time first: a build cache shared by several checkouts may hold this binary
    // compiled in another one.
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let folder = crate_dir.join("campaigns").join("rules");
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&folder).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rhai") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let rule = Rule::compile(&path.display().to_string(), &source, Limits::default())
            .unwrap_or_else(|e| panic!("{e}"));
        let cases_path = path.with_extension("cases.toml");
        let text = std::fs::read_to_string(&cases_path)
            .unwrap_or_else(|_| panic!("{} has no cases file", path.display()));
        let results = cases::run_cases(&rule, &text, &cases_path.display().to_string()).unwrap();
        for result in &results {
            assert!(
                result.passed(),
                "{}: case '{}': {:?}",
                path.display(),
                result.name,
                result.differences
            );
        }
        checked.push(path.file_stem().unwrap().to_string_lossy().to_string());
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "ab_split",
            "cart_abandonment",
            "daily_checkin",
            "order_shipped",
            "win_back"
        ]
    );
}
