//! The Prometheus text exposition format, version 0.0.4: a writer, and a checker for tests.
//!
//! Why this format and not OpenMetrics: `promtool check metrics` (Debian 12 ships Prometheus
//! 2.42) reads only this one, every Prometheus server and most other scrapers read it, and
//! nothing here needs what OpenMetrics adds (exemplars, `_created` series, info and
//! stateset types). Serve it as [`CONTENT_TYPE`].
//!
//! ```text
//! # HELP appliance_drops_total Packets dropped, by reason.
//! # TYPE appliance_drops_total counter
//! appliance_drops_total{reason="no_route"} 3
//! # HELP appliance_storage_latency_seconds Time from a request's arrival to its reply.
//! # TYPE appliance_storage_latency_seconds histogram
//! appliance_storage_latency_seconds_bucket{op="get",le="0.0001"} 7
//! appliance_storage_latency_seconds_bucket{op="get",le="+Inf"} 9
//! appliance_storage_latency_seconds_sum{op="get"} 0.0021
//! appliance_storage_latency_seconds_count{op="get"} 9
//! ```
//!
//! Every family gets its HELP and TYPE line before its samples, and its samples stay together
//! (the format requires both). Names are checked (debug builds) against the rules the lint of
//! `promtool` applies: counters end in `_total`, gauges do not, names and label names are
//! valid. [`lint`] checks a whole exposition the same way, so a crate's unit tests catch what
//! `promtool check metrics` would.

#![forbid(unsafe_code)]

use std::fmt::Write as _;

pub mod lint;

pub use lint::lint;

/// The Content-Type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A sample value: counters are written as exact integers, the rest as floats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(v)
    }
}

impl From<u32> for Value {
    fn from(v: u32) -> Value {
        Value::Int(u64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

/// Writes `v` as the format spells numbers (`+Inf`, `-Inf`, `NaN`; shortest exact decimal).
pub fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

fn write_value(out: &mut String, v: Value) {
    match v {
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => write_float(out, f),
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn write_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Whether `name` is a valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn valid_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `name` is a valid label name (`[a-zA-Z_][a-zA-Z0-9_]*`, not `__`-reserved).
pub fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    !name.starts_with("__")
        && chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The kind of a family (its TYPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// An exposition being written. Families are written in the order they are started.
#[derive(Debug, Default)]
pub struct Writer {
    out: String,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    /// Starts a counter family; `name` must end in `_total`.
    pub fn counter(&mut self, name: &str, help: &str) -> Family<'_> {
        debug_assert!(name.ends_with("_total"), "counter {name} must end in _total");
        self.family(name, Kind::Counter, help)
    }

    /// Starts a gauge family; `name` must not end in `_total`.
    pub fn gauge(&mut self, name: &str, help: &str) -> Family<'_> {
        debug_assert!(!name.ends_with("_total"), "gauge {name} must not end in _total");
        self.family(name, Kind::Gauge, help)
    }

    /// Starts a histogram family (samples `name_bucket`, `name_sum`, `name_count`).
    pub fn histogram(&mut self, name: &str, help: &str) -> Histogram<'_> {
        Histogram { family: self.family(name, Kind::Histogram, help) }
    }

    fn family(&mut self, name: &str, kind: Kind, help: &str) -> Family<'_> {
        debug_assert!(valid_metric_name(name), "metric name {name:?}");
        let _ = write!(self.out, "# HELP {name} ");
        for c in help.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                c => self.out.push(c),
            }
        }
        let _ = writeln!(self.out, "\n# TYPE {name} {}", kind.name());
        Family { w: self, name: name.to_owned() }
    }

    /// The exposition.
    pub fn finish(self) -> String {
        self.out
    }

    fn sample_line(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, &str)],
        extra: Option<(&str, &str)>,
        v: Value,
    ) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        let all = labels.iter().copied().chain(extra);
        let mut first = true;
        for (k, val) in all {
            debug_assert!(valid_label_name(k), "label name {k:?} of {name}");
            self.out.push(if first { '{' } else { ',' });
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            write_label_value(&mut self.out, val);
            self.out.push('"');
        }
        if !first {
            self.out.push('}');
        }
        self.out.push(' ');
        write_value(&mut self.out, v);
        self.out.push('\n');
    }
}

/// A counter or gauge family: add its samples.
pub struct Family<'w> {
    w: &'w mut Writer,
    name: String,
}

impl Family<'_> {
    /// One sample with `labels` (none: `&[]`).
    pub fn sample(&mut self, labels: &[(&str, &str)], v: impl Into<Value>) -> &mut Self {
        self.w.sample_line(&self.name, "", labels, None, v.into());
        self
    }
}

/// A histogram family: add one series per label set.
pub struct Histogram<'w> {
    family: Family<'w>,
}

impl Histogram<'_> {
    /// One series: `counts[i]` observations fell in bucket `i` (not cumulative), whose upper
    /// bound is `bounds[i]`; `counts[bounds.len()]`, when present, is the overflow bucket
    /// (above the last bound). `sum` is the sum of the observations.
    pub fn series(&mut self, labels: &[(&str, &str)], bounds: &[f64], counts: &[u64], sum: f64) -> &mut Self {
        debug_assert!(counts.len() == bounds.len() || counts.len() == bounds.len() + 1);
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds must increase");
        let name = &self.family.name;
        let w = &mut *self.family.w;
        let mut cumulative = 0u64;
        let mut le = String::new();
        for (b, &bound) in bounds.iter().enumerate() {
            cumulative += counts.get(b).copied().unwrap_or(0);
            le.clear();
            write_float(&mut le, bound);
            w.sample_line(name, "_bucket", labels, Some(("le", &le)), Value::Int(cumulative));
        }
        let count = cumulative + counts.get(bounds.len()).copied().unwrap_or(0);
        w.sample_line(name, "_bucket", labels, Some(("le", "+Inf")), Value::Int(count));
        w.sample_line(name, "_sum", labels, None, Value::Float(sum));
        w.sample_line(name, "_count", labels, None, Value::Int(count));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_help_type_and_escaped_labels() {
        let mut w = Writer::new();
        w.counter("x_drops_total", "Dropped \\ packets\nby reason").sample(&[("reason", "a\"b\\c\nd")], 3u64);
        w.gauge("x_ratio", "A ratio").sample(&[], 0.25).sample(&[("lcore", "1")], f64::INFINITY);
        let t = w.finish();
        assert_eq!(
            t,
            "# HELP x_drops_total Dropped \\\\ packets\\nby reason\n# TYPE x_drops_total counter\n\
             x_drops_total{reason=\"a\\\"b\\\\c\\nd\"} 3\n\
             # HELP x_ratio A ratio\n# TYPE x_ratio gauge\nx_ratio 0.25\nx_ratio{lcore=\"1\"} +Inf\n"
        );
        assert_eq!(lint(&t), Ok(()));
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf_sum_and_count() {
        let mut w = Writer::new();
        w.histogram("x_latency_seconds", "Latency").series(&[("op", "get")], &[0.00005, 0.001], &[2, 0, 5], 1.5);
        let t = w.finish();
        assert!(t.contains("x_latency_seconds_bucket{op=\"get\",le=\"0.00005\"} 2\n"), "{t}");
        assert!(t.contains("x_latency_seconds_bucket{op=\"get\",le=\"0.001\"} 2\n"), "{t}");
        assert!(t.contains("x_latency_seconds_bucket{op=\"get\",le=\"+Inf\"} 7\n"), "{t}");
        assert!(t.contains("x_latency_seconds_sum{op=\"get\"} 1.5\n"), "{t}");
        assert!(t.contains("x_latency_seconds_count{op=\"get\"} 7\n"), "{t}");
        assert_eq!(lint(&t), Ok(()));
    }

    #[test]
    fn numbers_are_spelled_as_the_format_wants() {
        let mut s = String::new();
        for v in [f64::NAN, f64::NEG_INFINITY, 1e21, 5e-5, 3.0] {
            write_float(&mut s, v);
            s.push(' ');
        }
        assert_eq!(s, "NaN -Inf 1000000000000000000000 0.00005 3 ");
    }

    #[test]
    fn names() {
        assert!(valid_metric_name("appliance_drops_total") && valid_metric_name("a:b"));
        assert!(!valid_metric_name("1x") && !valid_metric_name("a-b") && !valid_metric_name(""));
        assert!(valid_label_name("le") && !valid_label_name("__name__") && !valid_label_name("a:b"));
    }
}
