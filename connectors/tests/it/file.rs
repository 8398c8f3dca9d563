//! The file connector appends one NDJSON line per send.

use std::collections::BTreeMap;

use nudge_connectors::file::FileConnector;
use nudge_connectors::{Connector, Notification};

#[tokio::test]
async fn each_send_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sends.ndjson");
    let file = FileConnector::new(path.clone());
    for user in ["a", "b"] {
        let notification = Notification {
            user_id: user.into(),
            template_id: "t".into(),
            data: BTreeMap::from([("thing1".to_string(), format!("hi {user}"))]),
            page: Some("pages/x".into()),
            campaign: "c".into(),
            send_id: format!("s-{user}"),
            dedup_key: format!("c:{user}"),
        };
        let receipt = file.send(&notification).await.unwrap();
        assert_eq!(receipt.provider_id, Some(format!("file:s-{user}")));
    }
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["user_id"], "b");
    assert_eq!(lines[1]["data"]["thing1"], "hi b");
    assert_eq!(lines[0]["dedup_key"], "c:a");
}

// Two writers on one file (two `serve` processes sharing a dry-run file; here two connectors,
// whose in-process locks do not see each other) keep every line whole: each line is one append.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_writers_on_one_file_never_interleave_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sends.ndjson");
    let writer = |name: &'static str| {
        let file = FileConnector::new(path.clone());
        tokio::spawn(async move {
            for i in 0..300 {
                // Many fields: the line is written in many pieces by anything that formats it
                // straight into the file.
                let data = (0..20)
                    .map(|k| (format!("thing{k}"), format!("{name}-{i}-{k}")))
                    .collect();
                let notification = Notification {
                    user_id: format!("{name}{i}"),
                    template_id: "t".into(),
                    data,
                    page: None,
                    campaign: "c".into(),
                    send_id: format!("{name}-{i}"),
                    dedup_key: format!("c:{name}:{i}"),
                };
                file.send(&notification).await.unwrap();
            }
        })
    };
    let (a, b) = (writer("a"), writer("b"));
    a.await.unwrap();
    b.await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut keys: Vec<String> = text
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("a broken line ({error}): {line}"));
            value["dedup_key"].as_str().unwrap().to_string()
        })
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 600);
}
