//! [`Counters`]: what `tollgate counters --format json` prints, summed the ways tests compare
//! packet counts. Apart from the lab because it only reads the JSON (and is tested without root).

use std::fmt;

use serde_json::Value;

/// The output of `tollgate counters --format json`.
#[derive(Debug, Clone)]
pub struct Counters(pub Value);

impl Counters {
    fn rules(&self) -> impl Iterator<Item = &Value> {
        self.0["rules"].as_array().into_iter().flatten()
    }

    /// Packets counted for `rule` with `action` (pass|drop) and `reason`
    /// (policy|ratelimit|default|audit), summed over policies; 0 when the row is absent.
    pub fn packets(&self, rule: &str, action: &str, reason: &str) -> u64 {
        self.rules()
            .filter(|r| r["rule"] == rule && r["action"] == action && r["reason"] == reason)
            .map(|r| r["packets"].as_u64().unwrap_or(0))
            .sum()
    }

    /// Packets counted for `rule`, whatever the action and reason.
    pub fn rule_packets(&self, rule: &str) -> u64 {
        self.rules()
            .filter(|r| r["rule"] == rule)
            .map(|r| r["packets"].as_u64().unwrap_or(0))
            .sum()
    }

    /// Packets counted by the default action (rule "(default)"), whatever the verdict.
    pub fn default_packets(&self) -> u64 {
        self.rules()
            .filter(|r| r["rule"] == "(default)" || r["reason"] == "default")
            .map(|r| r["packets"].as_u64().unwrap_or(0))
            .sum()
    }

    /// A global statistic (`non_ip`, `malformed`, `fragment_pass`, `unconfigured`, `unsupported`).
    pub fn stat(&self, name: &str) -> u64 {
        self.0["stats"][name].as_u64().unwrap_or(0)
    }
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}",
            serde_json::to_string_pretty(&self.0).unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_rows_by_rule_action_and_reason() {
        let c = Counters(serde_json::json!({
            "rules": [
                {"policy":"a","rule":"r","action":"drop","reason":"policy","packets":3,"bytes":1},
                {"policy":"b","rule":"r","action":"drop","reason":"policy","packets":4,"bytes":1},
                {"policy":"a","rule":"(default)","action":"pass","reason":"default","packets":5,"bytes":1}
            ],
            "stats": {"non_ip": 2}
        }));
        assert_eq!(c.packets("r", "drop", "policy"), 7);
        assert_eq!(c.packets("r", "pass", "policy"), 0);
        assert_eq!(c.default_packets(), 5);
        assert_eq!(c.stat("non_ip"), 2);
        assert_eq!(c.stat("malformed"), 0);
    }
}
