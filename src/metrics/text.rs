//! Prometheus's text exposition format (version 0.0.4): a `# HELP` and `# TYPE` line per
//! family, then its samples.

use std::fmt::Write;

use kith_storage::stats::HistogramSnapshot;

#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family: its name, type (`counter`, `gauge`, `histogram`) and help text.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{label}=\"{}\"", escape_label(value));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A family of one unlabelled counter.
    pub fn counter(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    /// A family of one unlabelled gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    /// A family of one histogram with these labels.
    pub fn histogram(
        &mut self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        snapshot: &HistogramSnapshot,
    ) {
        self.family(name, "histogram", help);
        self.histogram_samples(name, labels, snapshot);
    }

    /// One histogram's samples (`_bucket` per bound, `_sum`, `_count`) in a family
    /// already started.
    pub fn histogram_samples(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        snapshot: &HistogramSnapshot,
    ) {
        let bucket = format!("{name}_bucket");
        for (bound, count) in &snapshot.buckets {
            let le = number(*bound);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, *count as f64);
        }
        self.sample(&format!("{name}_sum"), labels, snapshot.sum_seconds);
        self.sample(&format!("{name}_count"), labels, snapshot.count as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// A value as Prometheus writes it: `+Inf`, integers without a fraction.
fn number(value: f64) -> String {
    if value == f64::INFINITY {
        "+Inf".into()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_written_as_prometheus_reads_them() {
        let mut out = Exposition::default();
        out.family("x_total", "counter", "Things.\nMore");
        out.sample("x_total", &[("path", "/a\"b\\c")], 3.0);
        let snapshot = HistogramSnapshot {
            buckets: vec![(0.5, 1), (f64::INFINITY, 2)],
            sum_seconds: 1.25,
            count: 2,
        };
        out.histogram("t_seconds", "Time.", &[("m", "GET")], &snapshot);
        assert_eq!(
            out.finish(),
            "# HELP x_total Things.\\nMore\n# TYPE x_total counter\n\
             x_total{path=\"/a\\\"b\\\\c\"} 3\n\
             # HELP t_seconds Time.\n# TYPE t_seconds histogram\n\
             t_seconds_bucket{m=\"GET\",le=\"0.5\"} 1\n\
             t_seconds_bucket{m=\"GET\",le=\"+Inf\"} 2\n\
             t_seconds_sum{m=\"GET\"} 1.25\nt_seconds_count{m=\"GET\"} 2\n"
        );
    }
}
