//! Checks a text exposition the way `promtool check metrics` does (its parser and its lint),
//! plus the unit rules of this project, so unit tests catch a bad exposition without a
//! Prometheus installation. The integration tests still run the real `promtool`.
//!
//! Checked: every line parses; every sample belongs to a family with one HELP and one TYPE
//! line, written before its samples, and the samples of a family are together; no series
//! twice; counters end in `_total`; other families do not end in `_total`, `_count`, `_sum`
//! or `_bucket`, nor carry `le`; histogram series have an `le="+Inf"` bucket, cumulative
//! buckets and a `_count` equal to it; names use base units (no `cycles`,
//! `milliseconds`, `hz`, abbreviations such as `ms`) and snake case; no OpenMetrics
//! `# EOF` marker.

use std::collections::{BTreeMap, BTreeSet};

use crate::{valid_label_name, valid_metric_name};

/// Name parts that are not base units (Prometheus wants seconds, bytes, hertz, ratios).
const NON_BASE_UNITS: &[&str] = &[
    "cycles",
    "milliseconds",
    "microseconds",
    "nanoseconds",
    "minutes",
    "hours",
    "days",
    "kilobytes",
    "megabytes",
    "gigabytes",
    "kibibytes",
    "mebibytes",
    "percent",
    "hz",
    "s",
    "sec",
    "ms",
    "us",
    "ns",
    "kb",
    "mb",
    "gb",
    "kib",
    "mib",
];

type Labels = Vec<(String, String)>;

struct Sample {
    name: String,
    labels: Labels,
    value: f64,
}

#[derive(Default)]
struct Family {
    help: bool,
    kind: Option<String>,
    sampled: bool,
}

/// Checks `text`; `Err` lists every problem found (with line numbers).
pub fn lint(text: &str) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    let mut samples: Vec<(usize, String, Sample)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            comment(n, rest, &mut families, &mut problems);
            continue;
        }
        let Some(s) = parse_sample(line) else {
            problems.push(format!("line {n}: cannot parse {line:?}"));
            continue;
        };
        let Some(fam) = family_of(&s.name, &families) else {
            problems.push(format!("line {n}: {} has no TYPE line before it", s.name));
            continue;
        };
        let f = families.get_mut(&fam).expect("family_of found it");
        if !f.help {
            problems.push(format!("line {n}: family {fam} has no HELP line before its samples"));
        }
        if order.last() != Some(&fam) {
            if f.sampled {
                problems.push(format!("line {n}: samples of {fam} are not together"));
            }
            order.push(fam.clone());
        }
        f.sampled = true;
        let mut key = s.labels.clone();
        key.sort();
        if !seen.insert((s.name.clone(), key)) {
            problems.push(format!("line {n}: series {} {:?} appears twice", s.name, s.labels));
        }
        samples.push((n, fam, s));
    }
    check_names(&families, &mut problems);
    check_labels(&samples, &families, &mut problems);
    check_histograms(&samples, &families, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn comment(n: usize, rest: &str, families: &mut BTreeMap<String, Family>, problems: &mut Vec<String>) {
    let rest = rest.trim_start();
    if rest == "EOF" {
        problems.push(format!("line {n}: `# EOF` is OpenMetrics, not the text format"));
        return;
    }
    let mut parts = rest.splitn(3, ' ');
    let (Some(keyword), Some(name)) = (parts.next(), parts.next()) else { return };
    let f = families.entry(name.to_owned()).or_default();
    match keyword {
        "HELP" => {
            if f.help {
                problems.push(format!("line {n}: second HELP for {name}"));
            }
            f.help = true;
        }
        "TYPE" => {
            if f.kind.is_some() || f.sampled {
                problems.push(format!("line {n}: TYPE for {name} comes twice or after its samples"));
            }
            let kind = parts.next().unwrap_or("").trim();
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                problems.push(format!("line {n}: unknown type {kind:?} for {name}"));
            }
            f.kind = Some(kind.to_owned());
        }
        _ => {}
    }
}

/// The family a sample name belongs to: itself, or a histogram/summary it is a part of.
fn family_of(name: &str, families: &BTreeMap<String, Family>) -> Option<String> {
    if families.get(name).is_some_and(|f| f.kind.is_some()) {
        return Some(name.to_owned());
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            let kind = families.get(base).and_then(|f| f.kind.as_deref());
            if kind == Some("histogram") || (kind == Some("summary") && suffix != "_bucket") {
                return Some(base.to_owned());
            }
        }
    }
    None
}

fn check_names(families: &BTreeMap<String, Family>, problems: &mut Vec<String>) {
    for (name, f) in families {
        let Some(kind) = f.kind.as_deref() else {
            problems.push(format!("{name} has a HELP line but no TYPE"));
            continue;
        };
        if !valid_metric_name(name) || name.chars().any(|c| c.is_ascii_uppercase()) {
            problems.push(format!("{name}: not a snake_case metric name"));
        }
        let reserved = ["_total", "_count", "_sum", "_bucket"].iter().find(|s| name.ends_with(*s));
        match (kind, reserved) {
            ("counter", Some(&"_total")) => {}
            ("counter", _) => problems.push(format!("counter {name} should end in _total")),
            (_, Some(s)) => problems.push(format!("{kind} {name} should not end in {s}")),
            _ => {}
        }
        let base = name.strip_suffix("_total").unwrap_or(name);
        for part in base.split('_') {
            if NON_BASE_UNITS.contains(&part) {
                problems.push(format!("{name}: {part:?} is not a base unit (use seconds, bytes, hertz)"));
            }
        }
    }
}

fn check_labels(samples: &[(usize, String, Sample)], families: &BTreeMap<String, Family>, problems: &mut Vec<String>) {
    for (n, fam, s) in samples {
        let histogram = families[fam].kind.as_deref() == Some("histogram");
        for (k, _) in &s.labels {
            if !valid_label_name(k) {
                problems.push(format!("line {n}: label name {k:?}"));
            }
            if k == "le" && !(histogram && s.name.ends_with("_bucket")) {
                problems.push(format!("line {n}: label le outside a histogram bucket"));
            }
        }
        if histogram && s.name.ends_with("_bucket") && !s.labels.iter().any(|(k, _)| k == "le") {
            problems.push(format!("line {n}: bucket without le"));
        }
    }
}

fn check_histograms(
    samples: &[(usize, String, Sample)],
    families: &BTreeMap<String, Family>,
    problems: &mut Vec<String>,
) {
    // (family, labels without le) -> its buckets (le, value) in order, and its _count
    type Buckets = (Vec<(f64, f64)>, Option<f64>);
    let mut series: BTreeMap<(String, Labels), Buckets> = BTreeMap::new();
    for (_, fam, s) in samples {
        if families[fam].kind.as_deref() != Some("histogram") {
            continue;
        }
        let mut rest: Labels = s.labels.iter().filter(|(k, _)| k != "le").cloned().collect();
        rest.sort();
        let entry = series.entry((fam.clone(), rest)).or_default();
        if s.name.ends_with("_bucket") {
            let le = s.labels.iter().find(|(k, _)| k == "le").map_or("", |(_, v)| v.as_str());
            match parse_float(le) {
                Some(b) => entry.0.push((b, s.value)),
                None => problems.push(format!("{}: le={le:?} is not a number", s.name)),
            }
        } else if s.name.ends_with("_count") {
            entry.1 = Some(s.value);
        }
    }
    for ((fam, labels), (buckets, count)) in series {
        if buckets.windows(2).any(|w| w[1].0 <= w[0].0 || w[1].1 < w[0].1) {
            problems.push(format!("{fam} {labels:?}: buckets not in increasing le order or not cumulative"));
        }
        match buckets.last() {
            Some((b, v)) if b.is_infinite() => {
                if count != Some(*v) {
                    problems.push(format!("{fam} {labels:?}: _count {count:?} is not the +Inf bucket {v}"));
                }
            }
            _ => problems.push(format!("{fam} {labels:?}: no le=\"+Inf\" bucket (last)")),
        }
    }
}

fn parse_float(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

/// `name{k="v",...} value [timestamp]`.
fn parse_sample(line: &str) -> Option<Sample> {
    let end = line.find(['{', ' '])?;
    let name = line[..end].to_owned();
    if !valid_metric_name(&name) {
        return None;
    }
    let mut rest = &line[end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let (l, after) = parse_labels(r)?;
        labels = l;
        rest = after;
    }
    let mut fields = rest.split_whitespace();
    let value = parse_float(fields.next()?)?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().ok()?;
    }
    if fields.next().is_some() {
        return None;
    }
    Some(Sample { name, labels, value })
}

/// `k="v",k2="v2"}` → labels and what follows the `}`.
fn parse_labels(s: &str) -> Option<(Labels, &str)> {
    let mut labels = Vec::new();
    let mut i = 0;
    let b = s.as_bytes();
    loop {
        if b.get(i) == Some(&b'}') {
            return Some((labels, &s[i + 1..]));
        }
        let eq = s[i..].find('=')? + i;
        let key = s[i..eq].to_owned();
        if b.get(eq + 1) != Some(&b'"') {
            return None;
        }
        let mut val = String::new();
        let mut j = eq + 2;
        loop {
            match *b.get(j)? {
                b'"' => break,
                b'\\' => {
                    j += 1;
                    match *b.get(j)? {
                        b'n' => val.push('\n'),
                        b'\\' => val.push('\\'),
                        b'"' => val.push('"'),
                        _ => return None,
                    }
                    j += 1;
                }
                _ => {
                    let c = s[j..].chars().next()?;
                    val.push(c);
                    j += c.len_utf8();
                }
            }
        }
        labels.push((key, val));
        i = j + 1;
        if b.get(i) == Some(&b',') {
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lint;

    fn problems(t: &str) -> String {
        lint(t).err().unwrap_or_default().join("\n")
    }

    #[test]
    fn a_clean_exposition_passes() {
        let t = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 1\na_total{x=\"2\"} 2\n\
                 # HELP h_seconds H.\n# TYPE h_seconds histogram\nh_seconds_bucket{le=\"0.1\"} 1\n\
                 h_seconds_bucket{le=\"+Inf\"} 2\nh_seconds_sum 0.3\nh_seconds_count 2\n";
        assert_eq!(lint(t), Ok(()));
    }

    #[test]
    fn openmetrics_style_counters_fail_as_promtool_fails_them() {
        // What prometheus-client wrote and served as text/plain 0.0.4.
        let t = "# HELP a_drops Dropped.\n# TYPE a_drops counter\na_drops_total{r=\"x\"} 1\n# EOF\n";
        let p = problems(t);
        assert!(p.contains("a_drops_total has no TYPE"), "{p}");
        assert!(p.contains("counter a_drops should end in _total"), "{p}");
        assert!(p.contains("# EOF"), "{p}");
    }

    #[test]
    fn units_suffixes_and_grouping() {
        let t = "# HELP a_busy_cycles_total C.\n# TYPE a_busy_cycles_total counter\na_busy_cycles_total 1\n\
                 # HELP g_total G.\n# TYPE g_total gauge\ng_total 1\n\
                 # HELP b B.\n# TYPE b gauge\nb{le=\"1\"} 1\n\
                 # HELP c C.\n# TYPE c gauge\nc 1\nb 2\nc 1\n";
        let p = problems(t);
        assert!(p.contains("\"cycles\" is not a base unit"), "{p}");
        assert!(p.contains("gauge g_total should not end in _total"), "{p}");
        assert!(p.contains("label le outside"), "{p}");
        assert!(p.contains("samples of b are not together"), "{p}");
        assert!(p.contains("series c [] appears twice"), "{p}");
    }

    #[test]
    fn histograms_must_be_cumulative_and_end_in_inf() {
        let t = "# HELP h_seconds H.\n# TYPE h_seconds histogram\nh_seconds_bucket{le=\"0.1\"} 3\n\
                 h_seconds_bucket{le=\"1\"} 2\nh_seconds_sum 1\nh_seconds_count 3\n";
        let p = problems(t);
        assert!(p.contains("not cumulative"), "{p}");
        assert!(p.contains("no le=\"+Inf\""), "{p}");
        let t = "# TYPE x gauge\nx 1\nx{a=\"unterminated} 2\n";
        let p = problems(t);
        assert!(p.contains("no HELP") && p.contains("cannot parse"), "{p}");
    }
}
