//! How long each data source took to answer the retrieval plugins' searches, and how often it
//! failed or was late: what `Engine.Metrics` reports per source.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// One source's searches since moed started.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SourceTime {
    pub searches: u64,
    /// Searches that ended in an error (including a source too late for its share of time).
    pub failures: u64,
    /// Seconds the plugins waited for this source, all searches together.
    pub seconds: f64,
}

/// Per source label; labels come from the administrator's configuration, so the map is small.
#[derive(Debug, Default)]
pub struct SearchTimes {
    by_label: Mutex<BTreeMap<String, SourceTime>>,
}

impl SearchTimes {
    pub fn record(&self, label: &str, took: Duration, ok: bool) {
        let mut map = self.by_label.lock().unwrap_or_else(|p| p.into_inner());
        let t = map.entry(label.to_string()).or_default();
        t.searches += 1;
        t.failures += u64::from(!ok);
        t.seconds += took.as_secs_f64();
    }

    /// The counters of `labels` (the sources configured now), zero for one never searched.
    pub fn of(&self, labels: &[String]) -> Vec<(String, SourceTime)> {
        let map = self.by_label.lock().unwrap_or_else(|p| p.into_inner());
        labels
            .iter()
            .map(|l| (l.clone(), map.get(l).copied().unwrap_or_default()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_label_and_lists_only_those_asked() {
        let t = SearchTimes::default();
        t.record("docs", Duration::from_millis(250), true);
        t.record("docs", Duration::from_millis(750), false);
        t.record("gone", Duration::from_secs(1), true);
        let got = t.of(&["docs".into(), "new".into()]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "docs");
        assert_eq!((got[0].1.searches, got[0].1.failures), (2, 1));
        assert!((got[0].1.seconds - 1.0).abs() < 1e-9);
        assert_eq!(got[1], ("new".to_string(), SourceTime::default()));
    }
}
