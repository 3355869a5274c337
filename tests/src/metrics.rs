//! A small reader for the Prometheus text exposition format: enough to sum the samples of a
//! metric whose labels match a filter.

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Every sample in `text` (comments, `# EOF` and malformed lines are skipped).
pub fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if rest.starts_with('{') {
        let (l, after) = parse_labels(&rest[1..])?;
        labels = l;
        rest = after;
    }
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some(Sample { name, labels, value })
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows the `}`.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        while matches!(chars.peek(), Some((_, c)) if c.is_whitespace() || *c == ',') {
            chars.next();
        }
        match chars.peek() {
            Some((i, '}')) => return Some((labels, &s[i + 1..])),
            None => return None,
            _ => {}
        }
        let mut key = String::new();
        loop {
            match chars.next()? {
                (_, '=') => break,
                (_, c) if !c.is_whitespace() => key.push(c),
                _ => {}
            }
        }
        while matches!(chars.peek(), Some((_, c)) if c.is_whitespace()) {
            chars.next();
        }
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut val = String::new();
        loop {
            match chars.next()? {
                (_, '"') => break,
                (_, '\\') => match chars.next()?.1 {
                    'n' => val.push('\n'),
                    c => val.push(c),
                },
                (_, c) => val.push(c),
            }
        }
        labels.push((key, val));
    }
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

/// Sum of every sample named exactly `name` whose labels include all of `filter`
/// (e.g. `metric_sum(text, "appliance_port_rx_packets_total", &[("port", "inside")])` sums
/// over the queues). 0.0 when none matches.
pub fn metric_sum(text: &str, name: &str, filter: &[(&str, &str)]) -> f64 {
    parse_samples(text)
        .iter()
        .filter(|s| s.name == name && filter.iter().all(|(k, v)| s.label(k) == Some(v)))
        .map(|s| s.value)
        .sum()
}

/// Whether the metric family exists in `text`: a sample named `name`, or a `# TYPE`/`# HELP`
/// line for it. A counter `foo_total` also matches the family `foo` (OpenMetrics names
/// counter families without `_total`), so a labelled counter that has no samples yet still
/// counts in either format.
pub fn family_present(text: &str, name: &str) -> bool {
    let base = name.strip_suffix("_total").unwrap_or(name);
    text.lines().any(|l| {
        let l = l.trim();
        if let Some(rest) = l.strip_prefix("# TYPE ").or_else(|| l.strip_prefix("# HELP ")) {
            let fam = rest.split_whitespace().next().unwrap_or("");
            fam == name || fam == base
        } else {
            parse_line(l).is_some_and(|s| s.name == name)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP appliance_port_rx_packets Packets received.
# TYPE appliance_port_rx_packets counter
appliance_port_rx_packets_total{port="inside",queue="0"} 10
appliance_port_rx_packets_total{port="inside",queue="1"} 5
appliance_port_rx_packets_total{port="outside",queue="0"} 7 1700000000000
appliance_port_rx_packets_created{port="inside",queue="0"} 1.7e9
# HELP appliance_drops Dropped packets.
# TYPE appliance_drops counter
# HELP appliance_neighbors Neighbour entries.
# TYPE appliance_neighbors gauge
appliance_neighbors{state="reachable"} 2
appliance_neighbors{ state = "stale" , } 1
appliance_mempool_in_use 123
weird{path="a\"b\\c,d}"} +Inf
# EOF
"#;

    #[test]
    fn sums_with_label_filter() {
        assert_eq!(metric_sum(TEXT, "appliance_port_rx_packets_total", &[("port", "inside")]), 15.0);
        assert_eq!(metric_sum(TEXT, "appliance_port_rx_packets_total", &[]), 22.0);
        assert_eq!(metric_sum(TEXT, "appliance_port_rx_packets_total", &[("port", "inside"), ("queue", "1")]), 5.0);
        assert_eq!(metric_sum(TEXT, "appliance_port_rx_packets_total", &[("port", "nope")]), 0.0);
        assert_eq!(metric_sum(TEXT, "appliance_neighbors", &[]), 3.0);
        assert_eq!(metric_sum(TEXT, "appliance_neighbors", &[("state", "stale")]), 1.0);
        assert_eq!(metric_sum(TEXT, "appliance_mempool_in_use", &[]), 123.0);
        assert_eq!(metric_sum(TEXT, "missing", &[]), 0.0);
    }

    #[test]
    fn parses_escapes_and_special_values() {
        let s = parse_samples(TEXT);
        let w = s.iter().find(|s| s.name == "weird").unwrap();
        assert_eq!(w.label("path"), Some("a\"b\\c,d}"));
        assert!(w.value.is_infinite());
        assert_eq!(s.iter().filter(|s| s.name.starts_with("appliance_port_rx_packets")).count(), 4);
    }

    #[test]
    fn family_presence() {
        assert!(family_present(TEXT, "appliance_drops_total"));
        assert!(family_present(TEXT, "appliance_drops"));
        assert!(family_present(TEXT, "appliance_port_rx_packets_total"));
        assert!(family_present(TEXT, "appliance_mempool_in_use"));
        assert!(!family_present(TEXT, "appliance_punts_total"));
    }
}
