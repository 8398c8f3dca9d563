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
